"""A ``--shard-classes`` run on 2 gloo ranks killed with SIGKILL resumes from its per-rank
checkpoint on 2 ranks, on 3 ranks (resharded) and on one process, and each ends where an
uninterrupted one-process run ends: backbone, head rows, centers, momentum and the logged
losses to 1e-5."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from facecl.cli import app
from facecl.train import sharded_checkpoint as sc
from facecl.train.checkpoint import load_checkpoint
from facecl.train.last import load_last
from facecl.train.metrics import read_metrics

ARGS = ["--arch", "tiny", "--steps", "12", "--batch-size", "12", "--workers", "0"]
ARGS += ["--log-every", "2", "--checkpoint-every", "4", "--lr", "0.05", "--threads", "1"]
ARGS += ["--loss", "cl", "--lambda", "0.1", "--no-progress"]
SHARDED = ["--ddp", "2", "--shard-classes"]

# A loader slowed down (20 ms an image) so the run can be killed mid-way; the slowdown
# changes timing only, never values. As a sitecustomize on PYTHONPATH it reaches the ranks
# that --ddp spawns too (fresh interpreters: a patch in the parent would not).
SLOW = (
    "import time\n"
    "import facecl.pack.dataset as d\n"
    "get = d.ShardDataset.__getitem__\n"
    "d.ShardDataset.__getitem__ = lambda self, i: (time.sleep(0.02), get(self, i))[1]\n"
)


def cli(*args) -> None:
    r = CliRunner().invoke(app, [*map(str, args)])
    assert r.exit_code == 0, r.output


def kill_at_checkpoint(pack: Path, run: Path, step: int, timeout: float = 300) -> int:
    """Start the sharded run, SIGKILL its whole process group once ``checkpoints/last/``
    holds ``step`` or later; that step."""
    site = run.parent / "slow_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "facecl", "train", str(pack), "-o", str(run)]
    cmd += [*ARGS, *SHARDED]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
    ckpt = Path(str(run) + ".partial") / "checkpoints" / "last"
    t0 = time.time()
    try:
        while time.time() - t0 < timeout:
            assert proc.poll() is None, f"the run ended early: {proc.stderr.read()!r}"
            if sc.is_sharded(ckpt) and sc.read_index(ckpt).step >= step:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return sc.read_index(ckpt).step


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def assert_same_run(run: Path, reference: Path) -> None:
    want, got = load_checkpoint(reference / "model.pt"), load_checkpoint(run / "model.pt")
    for key, value in want["model"].items():
        assert same(got["model"][key], value), key
    ref_last, last = load_checkpoint(reference / "checkpoints" / "last.pt"), load_last(run)
    assert last is not None and last["step"] == 12
    for part in ("head_state", "loss_state"):
        for key, value in ref_last[part].items():
            assert same(last[part][key], value), (part, key)
    for idx, entry in ref_last["optimizer"]["state"].items():
        assert same(last["optimizer"]["state"][idx]["momentum_buffer"], entry["momentum_buffer"])
    ra, rb = read_metrics(reference / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rb] == list(range(2, 13, 2))
    for x, y in zip(ra, rb, strict=True):
        for key in ("loss", "softmax", "center"):
            assert abs(x[key] - y[key]) < 1e-5, (x["step"], key)


@pytest.mark.slow
def test_a_killed_sharded_run_resumes_on_2_3_and_1_processes(pack, tmp_path):
    reference = tmp_path / "reference"
    cli("train", pack, "-o", reference, *ARGS)
    run = tmp_path / "run"
    at = kill_at_checkpoint(pack, run, step=4)
    assert 4 <= at < 12 and not run.exists()
    partial = Path(str(run) + ".partial")
    index = sc.read_index(partial / "checkpoints" / "last")
    assert index.world == 2 and not (partial / "checkpoints" / "last.pt").exists()
    for name in ("three", "one"):  # the same killed run, resumed on other world sizes
        shutil.copytree(partial, tmp_path / f"{name}.partial")
    cli("train", pack, "-o", run, *ARGS, *SHARDED)
    cli("train", pack, "-o", tmp_path / "three", *ARGS, "--ddp", "3", "--shard-classes")
    cli("train", pack, "-o", tmp_path / "one", *ARGS)
    for resumed in (run, tmp_path / "three", tmp_path / "one"):
        assert_same_run(resumed, reference)
    assert sc.read_index(tmp_path / "three" / "checkpoints" / "last").world == 3
    assert load_checkpoint(run / "model.pt")["head_state"] == {}  # backbone only
