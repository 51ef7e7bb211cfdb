"""A torchrun group (2 gloo ranks on the CPU): the run trains, and a re-run that is up to date
is reported once, by rank 0 (issue 18 item 5: every rank used to print it and its JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.helpers import make_pack

pytestmark = pytest.mark.slow

ARGS = ["--arch", "tiny", "--steps", "4", "--batch-size", "8", "--workers", "0"]
ARGS += ["--no-progress", "--json"]


def _torchrun(cwd: Path, out: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["-m", "facecl", "train", "pack", "-o", out, *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_trains_and_reports_up_to_date_once(tmp_path):
    make_pack(tmp_path)
    first = _torchrun(tmp_path, "run")
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads(first.stdout)["world"] == 2  # one JSON document: rank 0's
    again = _torchrun(tmp_path, "run")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["up_to_date"] is True
    assert again.stderr.count("up to date") == 1
