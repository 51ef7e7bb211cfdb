"""A tiny real pipeline (align -> pack -> train -> embed of 6 LFW photos, each stage seconds)
built once per session by the CLI in subprocesses, for the fault tests to attack."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LFW_MINI
from tests.faults.helpers import facecl

IDENTITIES = ("Aaron_Eckhart", "Aaron_Guiel", "Aaron_Patterson")
ALIGN_ARGS = ("--chunk-size", "2", "--workers", "1")
PACK_ARGS = ("--shard-size", "2")
TRAIN_ARGS = ("--arch", "tiny", "--steps", "6", "--batch-size", "4", "--workers", "0")
TRAIN_ARGS += ("--checkpoint-every", "1", "--log-every", "1", "--threads", "1", "--no-progress")


@dataclass(frozen=True)
class Pipeline:
    src: Path  # ROOT/<identity>/<image>.jpg
    align: Path
    pack: Path
    run: Path
    emb: Path


def make_source(root: Path, per_identity: int = 2) -> Path:
    """``root`` holding up to ``per_identity`` photos of each of IDENTITIES."""
    for ident in IDENTITIES:
        (root / ident).mkdir(parents=True)
        for f in sorted((LFW_MINI / "lfw_original_150px" / ident).iterdir())[:per_identity]:
            shutil.copy(f, root / ident / f.name)
    return root


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Pipeline:
    base = tmp_path_factory.mktemp("pipeline")
    src = make_source(base / "src")
    p = Pipeline(src, base / "A", base / "P", base / "R", base / "E")
    ok(facecl("align", src, "-o", p.align, *ALIGN_ARGS))
    ok(facecl("pack", p.align, "-o", p.pack, *PACK_ARGS))
    ok(facecl("train", p.pack, "-o", p.run, *TRAIN_ARGS))
    ok(facecl("embed", p.run, p.align, "-o", p.emb, "--device", "cpu"))
    return p


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def tmpfs(tmp_path):
    """``make(size, ro=False)``: a real tmpfs mounted at a new directory (root only; skipped
    otherwise), unmounted after the test."""
    mounted: list[Path] = []

    def make(size: str = "2m", ro: bool = False) -> Path:
        if not is_root() or shutil.which("mount") is None:
            pytest.skip("needs root to mount a tmpfs (real full / read-only file systems)")
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(d)
        return d

    yield make
    for d in reversed(mounted):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
