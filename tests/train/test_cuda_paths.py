"""The CUDA, AMP and DDP paths of training (issue #18), exercised on CPU where they can be:
a checkpoint mapped off the CPU, ``GradScaler("cpu")`` with an overflowing batch, host syncs
counted per step, ``--ddp N`` checked before spawning. The ``gpu``-marked tests run the same
paths on CUDA (``make gpu-check``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

from facecl.errors import CheckpointError
from facecl.pack.dataset import ShardDataset
from facecl.train.checkpoint import load_checkpoint
from facecl.train.config import TrainConfig
from facecl.train.loop import StopFlag, train
from facecl.train.state import build_state, restore, resume_from

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cfg(**kw) -> TrainConfig:
    base = {
        "arch": "tiny",
        "loss": "cl",
        "lam": 0.1,
        "steps": 6,
        "batch_size": 8,
        "workers": 0,
        "log_every": 2,
        "checkpoint_every": 3,
        "lr": 0.05,
        "threads": 1,
    }
    return TrainConfig(**{**base, **kw})


def _stopped_at(cfg: TrainConfig, pack: Path, work: Path, step: int, **kw) -> None:
    """Train in ``work`` and stop (checkpointing) after ``step`` steps, as SIGTERM does."""
    stop = StopFlag()

    def progress(done: int, record: object) -> None:
        if done == step:
            stop.requested = True

    with pytest.raises(KeyboardInterrupt):
        train(cfg, ShardDataset(pack), work, stop=stop, on_progress=progress, **kw)
    assert load_checkpoint(work / "checkpoints" / "last.pt")["step"] == step


# --------------------------------------------------------------------------- 1. resume


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resume_onto_another_device_keeps_the_cpu_generator_on_the_cpu(pack, tmp_path):
    """The CUDA path resumed with every tensor mapped to the GPU, the CPU RNG state too, and
    ``torch.set_rng_state`` refused it. The meta device stands in for the GPU: a state on
    another device is resumed from a CPU-read checkpoint, the generator state bit-exact."""
    cfg = _cfg()
    _stopped_at(cfg, pack, tmp_path, 3)
    last = tmp_path / "checkpoints" / "last.pt"
    state = build_state(cfg, 4, {"input_size": [24, 20]}, torch.device("meta"))
    with pytest.raises(CheckpointError, match="map_location='cpu'"):
        restore(state, load_checkpoint(last, map_location="meta"), cfg)  # no traceback
    torch.manual_seed(12345)  # anything: the resume must overwrite it
    ckpt = resume_from(state, last, cfg)
    assert state.step == 3
    assert torch.equal(torch.get_rng_state(), ckpt["rng"]["torch"])
    assert next(state.net.parameters()).device.type == "meta"
    moments = [s["momentum_buffer"] for s in state.optimizer.state.values()]
    assert moments and all(m.device.type == "meta" for m in moments)


def test_stop_and_resume_in_process_is_bit_identical(pack, tmp_path):
    cfg = _cfg()
    train(cfg, ShardDataset(pack), tmp_path / "ref")
    _stopped_at(cfg, pack, tmp_path / "run", 3)
    summary = train(cfg, ShardDataset(pack), tmp_path / "run")
    assert summary["resumed_from"] == 3
    a = load_checkpoint(tmp_path / "ref" / "model.pt")
    b = load_checkpoint(tmp_path / "run" / "model.pt")
    for part in ("model", "head_state", "loss_state"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key}"
    ref = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    got = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    strip = ("images_per_s", "loader_wait_share")

    def values(lines: list[str]) -> list[dict]:
        return [{k: v for k, v in json.loads(x).items() if k not in strip} for x in lines]

    assert values(ref) == values(got)


@pytest.mark.gpu
@needs_cuda
def test_cuda_resume_after_a_stop(pack, tmp_path):
    cfg = _cfg(device="cuda")
    _stopped_at(cfg, pack, tmp_path, 3)
    summary = train(cfg, ShardDataset(pack), tmp_path)
    assert summary["resumed_from"] == 3 and summary["final"]["step"] == 6


# --------------------------------------------------------------------------- 2. scaler


def _scaled_state(loss: str, device: str = "cpu", init_scale: float = 2.0**10):
    cfg = _cfg(loss=loss, head="cosface" if loss == "acl" else "softmax")
    kwargs = {"input_size": [16, 16], "feature_dim": 4}
    state = build_state(cfg, 3, kwargs, torch.device(device), class_counts=[8, 8, 8])
    state.scaler = torch.amp.GradScaler(device, init_scale=init_scale)
    return cfg, state


def _step(cfg, state, images, labels, amp_dtype=None):
    from facecl.train.loop import train_step

    return train_step(
        state.net,
        state.net.head,
        state.center,
        state.optimizer,
        images,
        labels,
        lam=cfg.lam,
        scaler=state.scaler,
        amp_dtype=amp_dtype,
    )


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _scaler_skip_then_step(loss, device="cpu", amp_dtype=None, init_scale=2.0**10):
    cfg, state = _scaled_state(loss, device, init_scale)
    torch.manual_seed(1)
    images = torch.randn(6, 3, 16, 16, device=device)
    labels = torch.tensor([0, 0, 1, 2, 2, 2], device=device)
    poisoned = images.clone()
    poisoned[0, 0, 0, 0] = float("inf")  # one overflowing sample
    centers, weights = _snapshot(state.center), _snapshot(state.net)
    _step(cfg, state, poisoned, labels, amp_dtype)
    start = float(torch.tensor(init_scale))  # as the scaler holds it (float32)
    assert state.scaler.get_scale() < start  # the scaler found the inf and skipped
    for key, value in _snapshot(state.center).items():
        assert torch.equal(value, centers[key]), key  # the centers did not move
    for key, value in _snapshot(state.net).items():
        assert torch.equal(value, weights[key]), key
    _step(cfg, state, images, labels, amp_dtype)  # the next, finite batch
    after = _snapshot(state.center)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(after[k], centers[k]) for k in centers)  # this one moved them


@pytest.mark.parametrize("loss", ["cl", "cil", "acl", "acl-gamma"])
def test_a_step_the_scaler_skips_leaves_the_centers(loss):
    _scaler_skip_then_step(loss)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("loss", ["cl", "cil", "acl"])
def test_cuda_fp16_scaler_skip_leaves_the_centers(loss):
    _scaler_skip_then_step(loss, "cuda", torch.float16, init_scale=2.0**16)


# --------------------------------------------------------------------------- 3. host syncs

# Calls that make the host wait for the device on CUDA: a value read back, an output whose
# size depends on the data, a blocking copy.
_READS_BACK = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy"}
_DATA_SHAPED = {"unique", "unique_consecutive", "bincount", "nonzero", "argwhere", "masked_select"}
_READS_BACK |= {"equal", "allclose"}


class SyncCounter(TorchFunctionMode):
    """Records every torch call that would synchronise the host with a CUDA device."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in _READS_BACK or name in _DATA_SHAPED:
            self.syncs.append(name)
        elif name == "where" and len(args) + len(kwargs) == 1:
            self.syncs.append("where(cond)")
        elif name == "__getitem__" and _has_bool_index(args[1:]):
            self.syncs.append("boolean-mask indexing")
        elif name in ("to", "cuda", "copy_") and not kwargs.get("non_blocking", False):
            if any(isinstance(a, (torch.device, str)) for a in args[1:]) or "device" in kwargs:
                self.syncs.append(f"blocking {name}")
        return func(*args, **kwargs)


def _has_bool_index(index) -> bool:
    items = index[0] if len(index) == 1 and isinstance(index[0], tuple) else index
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def test_the_sync_counter_sees_the_usual_syncs():
    t = torch.randn(4)
    with SyncCounter() as counter:
        float(t.sum()), t[t > 0], torch.unique(t), t.to("cpu"), t.to("cpu", non_blocking=True)
    assert counter.syncs == ["__float__", "boolean-mask indexing", "unique", "blocking to"]


@pytest.mark.parametrize(
    "loss, head", [("cl", "softmax"), ("cil", "softmax"), ("acl", "arcface"), ("cl", "sphereface")]
)
def test_no_host_sync_in_a_step_that_does_not_log(pack, tmp_path, monkeypatch, loss, head):
    import facecl.train.loop as loop

    cfg = _cfg(loss=loss, head=head, lr=0.001, steps=6, log_every=3, checkpoint_every=6)
    step_fn = loop._one_step
    per_step: dict[int, list[str]] = {}

    def traced(run, step, images, labels, wait):
        done = step + 1
        if done % cfg.log_every == 0 or done % cfg.checkpoint_every == 0:
            return step_fn(run, step, images, labels, wait)  # logging reads values back
        with SyncCounter() as counter:
            out = step_fn(run, step, images, labels, wait)
        per_step[done] = counter.syncs
        return out

    monkeypatch.setattr(loop, "_one_step", traced)
    assert cfg.flip  # the flip mask's copy is part of the step
    train(cfg, ShardDataset(pack), tmp_path)
    assert per_step == {1: [], 2: [], 4: [], 5: []}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("amp", [False, True])  # fp32, and bf16 autocast (no grad scaler)
@pytest.mark.parametrize("loss", ["cl", "cil"])
def test_cuda_step_that_does_not_log_never_syncs(pack, tmp_path, monkeypatch, loss, amp):
    import facecl.train.loop as loop

    cfg = _cfg(loss=loss, device="cuda", amp=amp, amp_dtype="bfloat16", log_every=3)
    step_fn = loop._one_step

    def traced(run, step, images, labels, wait):
        if (step + 1) % cfg.log_every == 0 or (step + 1) % cfg.checkpoint_every == 0:
            return step_fn(run, step, images, labels, wait)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
        try:
            return step_fn(run, step, images, labels, wait)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(loop, "_one_step", traced)
    assert train(cfg, ShardDataset(pack), tmp_path)["final"]["step"] == cfg.steps


# --------------------------------------------------------------------------- 5. --ddp N


def _train_cli(pack: Path, run: Path, *extra: str):
    from typer.testing import CliRunner

    from facecl.cli import app

    args = ["train", str(pack), "-o", str(run), "--arch", "tiny", "--steps", "2"]
    args += ["--workers", "0", "--no-progress", *extra]
    return CliRunner().invoke(app, args)


def _assert_usage_error(result, needle: str, run: Path) -> None:
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # the error and its hint
    assert not run.exists() and not Path(f"{run}.partial").exists()  # checked before anything


def test_ddp_batch_that_does_not_split_is_refused_before_spawning(pack, tmp_path):
    run = tmp_path / "run"
    result = _train_cli(pack, run, "--batch-size", "8", "--ddp", "3", "--device", "cpu")
    _assert_usage_error(result, "does not split over --ddp 3", run)


def test_ddp_more_ranks_than_gpus_is_refused_before_spawning(pack, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one visible GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    run = tmp_path / "run"
    result = _train_cli(pack, run, "--batch-size", "8", "--ddp", "2", "--device", "cuda")
    _assert_usage_error(result, "--ddp 2 needs 2 GPUs, 1 visible", run)


def test_ddp_negative_is_a_usage_error(pack, tmp_path):
    from facecl.errors import UsageError
    from facecl.train.stage import run_train

    with pytest.raises(UsageError, match="--ddp must be >= 0"):
        run_train(pack, tmp_path / "run", _cfg(), ddp=-1, show_progress=False)
    assert not (tmp_path / "run.partial").exists()
