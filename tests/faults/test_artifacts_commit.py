"""The artifact contract under faults (issue 13 items 9, 10 and 15): a failed commit leaves a
resumable .partial without a manifest (and the previous output in place); a .partial is never
read as an artifact, even with a complete manifest in it; files honour the umask; runtime-only
config fields stay out of the fingerprint but keep their CLI options."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from facecl import artifacts
from facecl.artifacts import (
    MANIFEST,
    PARTIAL_STATE,
    StageOutput,
    read_manifest,
    runtime_fields,
)
from facecl.errors import ArtifactError
from facecl.train.config import TrainConfig
from tests.faults.conftest import PACK_ARGS, ok
from tests.faults.helpers import ENV, facecl, one_line_error


def _failing_final_rename(monkeypatch, target):
    real = os.replace

    def replace(src, dst):
        if os.fspath(dst) == os.fspath(target) and os.fspath(src).endswith(".partial"):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), os.fspath(dst))
        return real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", replace)


def test_failed_commit_leaves_a_resumable_partial_without_manifest(tmp_path, monkeypatch):
    """A46: EBUSY on the final rename: no output, no manifest in .partial, the partial
    state is back, so the same run resumes; the lock is dropped by the failed command."""
    out = tmp_path / "out"
    so = StageOutput(out, "pack", {"k": 1}, [])
    work = so.begin()
    (work / "data.bin").write_bytes(b"x" * 10)
    _failing_final_rename(monkeypatch, out)
    with pytest.raises(OSError, match="busy"):
        so.commit({"processed": 1})
    assert not out.exists()
    assert not (work / MANIFEST).exists() and (work / PARTIAL_STATE).is_file()
    monkeypatch.undo()
    again = StageOutput(out, "pack", {"k": 1}, [])  # same process: its own lock is re-taken
    assert again.begin() == work and again.resumed
    again.commit({"processed": 1})
    assert read_manifest(out).counts == {"processed": 1}


def test_failed_commit_over_an_existing_output_puts_it_back(tmp_path, monkeypatch):
    """A47: a forced rebuild whose final rename fails leaves the previous output intact."""
    out = tmp_path / "out"
    first = StageOutput(out, "pack", {"k": 1}, [])
    first.begin()
    first.commit({"processed": 1})
    so = StageOutput(out, "pack", {"k": 2}, [], force=True)
    so.begin()
    _failing_final_rename(monkeypatch, out)
    with pytest.raises(OSError):
        so.commit({"processed": 2})
    monkeypatch.undo()
    assert read_manifest(out).counts == {"processed": 1}
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]


def test_a_partial_with_a_complete_manifest_is_not_an_artifact(pipeline, tmp_path):
    """A48: a .partial holding a complete manifest (as a failed commit used to leave) is
    refused by read_manifest and by pack, in one line."""
    fake = tmp_path / "A.partial"
    shutil.copytree(pipeline.align, fake)
    with pytest.raises(ArtifactError, match="unfinished output"):
        read_manifest(fake)
    r = facecl("pack", fake, "-o", tmp_path / "P", *PACK_ARGS)
    one_line_error(r, 1, "unfinished output")
    still = tmp_path / "A2"
    shutil.copytree(pipeline.align, still)
    (still / PARTIAL_STATE).write_text("{}")  # a directory still marked in progress
    with pytest.raises(ArtifactError, match="unfinished output"):
        read_manifest(still)


def _modes(root):
    return {
        p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_every_file_of_every_stage_honours_the_umask(pipeline):
    """A49: the session pipeline ran under this process's umask: no file is 0600."""
    want = 0o666 & ~artifacts.current_umask()
    for art in (pipeline.align, pipeline.pack, pipeline.run, pipeline.emb):
        modes = _modes(art)
        assert modes and set(modes.values()) == {want}, (art.name, modes)


def test_a_stricter_umask_is_honoured_too(pipeline, tmp_path):
    """A50: under umask 027 a pack's files are 0640 (group-readable, not world)."""
    out = tmp_path / "P"
    r = subprocess.run(
        [sys.executable, "-m", "facecl", "pack", str(pipeline.align), "-o", str(out), *PACK_ARGS],
        capture_output=True,
        text=True,
        env=ENV,
        preexec_fn=lambda: os.umask(0o027),
    )
    ok(r)
    assert set(_modes(out).values()) == {0o640}


def test_runtime_fields_are_out_of_the_fingerprint_but_on_the_cli(tmp_path):
    """A51: train workers/threads/device (and --shard-classes: the same math on any world
    size) change neither the fingerprint nor the resume check, lr does; the options are
    still generated."""
    from facecl.cliconfig import leaves

    assert runtime_fields(TrainConfig) == {"workers", "threads", "device", "shard_classes"}
    flags = {lf.flag for lf in leaves(TrainConfig)}
    assert {"--workers", "--threads", "--device", "--shard-classes"} <= flags

    def fp(**kw):
        so = StageOutput(tmp_path / "o", "train", TrainConfig(**kw), [])
        return so.fingerprint

    assert fp() == fp(workers=7, threads=3, device="cpu", shard_classes=True)
    assert fp() != fp(lr=0.05)
    manifest_cfg = StageOutput(tmp_path / "o", "train", TrainConfig(workers=7), []).config
    assert manifest_cfg["workers"] == 7  # still recorded


def test_stage_runtime_fields_are_marked():
    """A52: embed's device is runtime (its resolved numeric mode is fingerprinted instead),
    and so is --verify-inputs (how up to date is decided, not what is written)."""
    from facecl.embed.config import EmbedConfig

    assert runtime_fields(EmbedConfig) == {"device", "verify_inputs"}


def test_partial_state_records_a_forced_start(tmp_path):
    """A53: a forced start says so in the partial state; a later unforced run resumes it
    too, and a forced run never resumes an unforced .partial (it clears it once)."""
    out = tmp_path / "out"
    so = StageOutput(out, "pack", {"k": 1}, [], force=True)
    work = so.begin()
    assert json.loads((work / PARTIAL_STATE).read_text())["forced"] is True
    (work / "keep").write_text("1")
    assert StageOutput(out, "pack", {"k": 1}, []).begin() == work and (work / "keep").exists()
    plain = tmp_path / "plain"
    w2 = StageOutput(plain, "pack", {"k": 1}, []).begin()
    (w2 / "old").write_text("1")
    forced = StageOutput(plain, "pack", {"k": 1}, [], force=True)
    forced.begin()
    assert not forced.resumed and not (w2 / "old").exists()
