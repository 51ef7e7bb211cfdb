"""Resume equivalence: a run killed (SIGKILL) or interrupted (SIGINT) in a real subprocess
continues from its last checkpoint and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from facecl.cli import app
from facecl.train.checkpoint import load_checkpoint
from facecl.train.metrics import read_metrics

runner = CliRunner()
ARGS = ["--arch", "tiny", "--steps", "24", "--batch-size", "8", "--workers", "0"]
ARGS += ["--log-every", "3", "--checkpoint-every", "4", "--lr", "0.05", "--threads", "1"]
ARGS += ["--loss", "cl", "--no-progress"]

# The CLI in a subprocess, with a loader slowed down (10 ms per image) so the test can
# interrupt it mid-run. The slowdown changes timing only, never values.
SLOW_CLI = (
    "import sys, time\n"
    "import facecl.pack.dataset as d\n"
    "get = d.ShardDataset.__getitem__\n"
    "d.ShardDataset.__getitem__ = lambda self, i: (time.sleep(0.01), get(self, i))[1]\n"
    "from facecl.cli import app\n"
    "app(args=sys.argv[1:], prog_name='facecl')\n"
)


def _start(pack: Path, run: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "train", str(pack), "-o", str(run), *ARGS],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_step(proc: subprocess.Popen, partial: Path, step: int, timeout: float = 120):
    """Until metrics.jsonl records ``step`` and a checkpoint exists."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.returncode} {proc.stderr.read()}")
        recs = []
        try:
            recs = read_metrics(partial / "metrics.jsonl")
        except ValueError:  # a line being written
            pass
        if recs and recs[-1]["step"] >= step and (partial / "checkpoints" / "last.pt").exists():
            return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the run did not get there in time")


@pytest.fixture(scope="module")
def reference(pack, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ref") / "run"
    r = runner.invoke(app, ["train", str(pack), "-o", str(run), *ARGS])
    assert r.exit_code == 0, r.output
    return run


def _assert_same_run(run: Path, reference: Path) -> None:
    a, b = load_checkpoint(run / "model.pt"), load_checkpoint(reference / "model.pt")
    for part in ("model", "head_state", "loss_state"):
        for key, value in b[part].items():
            assert torch.equal(a[part][key], value), f"{part}.{key}"
    la = [(r["step"], r["loss"], r["center"]) for r in read_metrics(run / "metrics.jsonl")]
    lb = [(r["step"], r["loss"], r["center"]) for r in read_metrics(reference / "metrics.jsonl")]
    assert la == lb  # the same losses at every logged step


def test_killed_run_resumes_to_the_same_weights(pack, tmp_path, reference):
    run = tmp_path / "run"
    partial = tmp_path / "run.partial"
    proc = _start(pack, run)
    _wait_for_step(proc, partial, 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not run.exists() and partial.is_dir()
    step = load_checkpoint(partial / "checkpoints" / "last.pt")["step"]
    assert 4 <= step < 24

    r = runner.invoke(app, ["train", str(pack), "-o", str(run), *ARGS, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resumed_from"] == step
    _assert_same_run(run, reference)


@pytest.mark.slow  # the SIGKILL test above covers resume equivalence in the fast set
def test_ctrl_c_checkpoints_and_resumes(pack, tmp_path, reference):
    run = tmp_path / "run"
    partial = tmp_path / "run.partial"
    proc = _start(pack, run)
    _wait_for_step(proc, partial, 6)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    step = load_checkpoint(partial / "checkpoints" / "last.pt")["step"]
    assert read_metrics(partial / "metrics.jsonl")[-1]["step"] <= step < 24

    r = runner.invoke(app, ["train", str(pack), "-o", str(run), *ARGS, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resumed_from"] == step
    _assert_same_run(run, reference)
