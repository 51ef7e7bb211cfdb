"""CUDA paths end to end through the CLI: AMP training (bfloat16 and float16), resuming a
CUDA run killed mid-way from checkpoints/last.pt, and embedding a CUDA-trained run on CUDA.
Skipped without a CUDA device; `make gpu-check` runs them (with `-m gpu`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facecl.cli import app
from facecl.embed.export import BUNDLED_FACES
from facecl.train.checkpoint import load_checkpoint
from facecl.train.loop import read_metrics
from tests.train.helpers import make_pack

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

runner = CliRunner()
STEPS = 24
ARGS = ["--arch", "tiny", "--steps", str(STEPS), "--batch-size", "8", "--workers", "0"]
ARGS += ["--log-every", "2", "--checkpoint-every", "4", "--lr", "0.05", "--loss", "cl"]
ARGS += ["--device", "cuda", "--amp", "--no-progress"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """8 classes x 6 synthetic 112x96 images (the embed stage's crop size)."""
    return make_pack(tmp_path_factory.mktemp("pack"), classes=8, size=(112, 96))


def _config(tmp: Path, amp_dtype: str) -> Path:
    path = tmp / f"{amp_dtype}.toml"
    path.write_text(f'amp_dtype = "{amp_dtype}"\n')
    return path


def _train(pack: Path, run: Path, amp_dtype: str, *extra: str) -> dict:
    cfg = _config(run.parent, amp_dtype)
    r = runner.invoke(
        app, ["train", str(pack), "-o", str(run), *ARGS, "--config", str(cfg), *extra, "--json"]
    )
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_amp_training_on_cuda(pack, tmp_path, amp_dtype):
    s = _train(pack, tmp_path / "run", amp_dtype)
    assert s["device"].startswith("cuda") and s["steps"] == STEPS
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert recs[-1]["step"] == STEPS and all(math.isfinite(r["loss"]) for r in recs)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["config"]["amp_dtype"] == amp_dtype
    # float16 needs a loss scaler (its state is checkpointed); bfloat16 trains without one.
    assert bool(ckpt.get("scaler")) == (amp_dtype == "float16")
    weights = load_checkpoint(tmp_path / "run" / "model.pt")["model"]
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in weights.values())


# The CLI in a subprocess with a loader slowed down (20 ms per image) so the test can kill it
# mid-run; the slowdown changes timing only.
SLOW_CLI = (
    "import sys, time\n"
    "import facecl.pack.dataset as d\n"
    "get = d.ShardDataset.__getitem__\n"
    "d.ShardDataset.__getitem__ = lambda self, i: (time.sleep(0.02), get(self, i))[1]\n"
    "from facecl.cli import app\n"
    "app(args=sys.argv[1:], prog_name='facecl')\n"
)


def _kill_at_step(pack: Path, run: Path, cfg: Path, step: int) -> int:
    """Start the run, SIGKILL it once a checkpoint at or past ``step`` exists; its step."""
    last = run.with_name(run.name + ".partial") / "checkpoints" / "last.pt"
    argv = ["train", str(pack), "-o", str(run), *ARGS, "--config", str(cfg)]
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *argv],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while time.time() - t0 < 120:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stderr and proc.stderr.read()}")
        if last.is_file() and _step(last) >= step:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return _step(last)


def _step(path: Path) -> int:
    for _ in range(20):  # a checkpoint is written atomically, but may be replaced meanwhile
        try:
            return int(load_checkpoint(path)["step"])
        except Exception:  # noqa: BLE001 - replaced under us: read the new one
            time.sleep(0.05)
    raise AssertionError(f"cannot read {path}")


@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_killed_cuda_run_resumes_from_last_checkpoint(pack, tmp_path, amp_dtype):
    run = tmp_path / "run"
    step = _kill_at_step(pack, run, _config(tmp_path, amp_dtype), 8)
    assert 8 <= step < STEPS and not run.exists()
    s = _train(pack, run, amp_dtype)
    assert s["resumed_from"] == step and s["steps"] == STEPS
    recs = read_metrics(run / "metrics.jsonl")
    logged = [r["step"] for r in recs]
    assert logged == sorted(set(logged)) and logged[-1] == STEPS  # one record per step, no gap
    assert all(math.isfinite(r["loss"]) for r in recs)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == STEPS and bool(ckpt.get("scaler")) == (amp_dtype == "float16")


def test_cuda_trained_run_embeds_on_cuda_like_on_cpu(pack, tmp_path):
    _train(pack, tmp_path / "run", "bfloat16")
    crops = tmp_path / "crops"
    for f in sorted(BUNDLED_FACES.glob("*.png")):
        (crops / f.stem).mkdir(parents=True)
        shutil.copy(f, crops / f.stem / f.name)
    vectors = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / f"emb_{dev}"
        argv = ["embed", str(tmp_path / "run"), str(crops), "--aligned", "-o", str(out)]
        r = runner.invoke(app, [*argv, "--device", dev, "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["ok"] == len(list(crops.iterdir()))
        with h5py.File(out / "embeddings.h5") as h:
            vectors[dev] = h["embeddings"][()]
    x, y = vectors["cpu"], vectors["cuda"]  # fp32 on CPU, fp16 on CUDA
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    assert cos.min() > 0.999


HEADS = ["softmax", "sphereface", "cosface", "arcface"]
LOSSES = ["none", "cl", "acl", "acl-gamma", "cil"]
MODES = [("fp32", ["--no-amp"]), ("bf16", ["--amp", "--amp-dtype", "bfloat16"]),
         ("fp16", ["--amp", "--amp-dtype", "float16"])]  # fmt: skip


@pytest.mark.parametrize("mode,flags", MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("head", HEADS)
def test_every_head_and_loss_stays_finite_in_each_numeric_mode(
    pack, tmp_path, head, loss, mode, flags
):
    """A few CUDA steps of each head x loss x {fp32, bf16 autocast, fp16 + loss scaling}: every
    logged loss finite and the final weights and centers finite."""
    base = ["--arch", "tiny", "--steps", "6", "--batch-size", "8", "--workers", "0"]
    base += ["--log-every", "2", "--lr", "0.01", "--device", "cuda", "--no-progress"]
    run = tmp_path / "run"
    args = ["train", str(pack), "-o", str(run), *base, "--head", head, "--loss", loss, *flags]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    for rec in read_metrics(run / "metrics.jsonl"):
        assert math.isfinite(rec["loss"]), rec
    ckpt = load_checkpoint(run / "model.pt")
    for part in ("model", "head_state", "loss_state"):
        for name, t in ckpt[part].items():
            if t.is_floating_point():
                assert torch.isfinite(t).all(), f"{part}.{name}"


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="checks the one-GPU refusal")
def test_ddp_on_one_gpu_is_a_clear_error(pack, tmp_path):
    r = runner.invoke(app, ["train", str(pack), "-o", str(tmp_path / "r"), *ARGS, "--ddp", "2"])
    assert r.exit_code == 2 and "--ddp" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.partial").exists()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs for NCCL")
def test_ddp_with_nccl_on_two_gpus(pack, tmp_path):
    r = runner.invoke(
        app, ["train", str(pack), "-o", str(tmp_path / "r"), *ARGS, "--ddp", "2", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["world"] == 2
