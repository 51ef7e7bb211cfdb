"""The training loop: plain functions with explicit arguments, no globals.

One step follows ECCV Alg. 1: forward the mini-batch, L = L_S + the center loss's own
``objective`` (lambda L_C, plus CIL's gamma L_I), backpropagate, update the centers by the
paper's rule (line 6, with the features of this forward pass, before the parameters move),
then the SGD step (line 7).

Determinism: everything random is derived from ``(seed, step)`` -- the data order and the
flips (``facecl.train.sampler``), and the initial weights (``torch.manual_seed(seed)``
before building, ``facecl.train.state``). A run that resumes from a checkpoint at step s
therefore sees exactly the batches an uninterrupted run sees from step s, and on CPU ends
with identical weights (the checkpoint also carries the partial metrics window,
``facecl.train.metrics``, so the logs match too).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from facecl.errors import FaceclError
from facecl.train.amp import autocast, found_inf
from facecl.train.checkpoint import save_checkpoint
from facecl.train.config import TrainConfig
from facecl.train.last import drop_other, load_last, save_sharded
from facecl.train.metrics import Window, append_record, read_metrics, truncate_metrics
from facecl.train.run import CHECKPOINTS, LAST, METRICS, MODEL
from facecl.train.sampler import StepBatchSampler, balanced_weights, flip_mask, iterate_batches
from facecl.train.state import (
    TrainState,
    build_state,
    checkpoint_payload,
    dataset_class_counts,
    dataset_input_spec,
    restore,
)

if TYPE_CHECKING:
    from facecl.losses.center import CenterLossBase

ProgressFn = Callable[[int, dict[str, Any] | None], None]


class DivergedError(FaceclError):
    """The loss became NaN or infinite."""


class StopFlag:
    """Set by a signal handler; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False


def resolve_device(name: str) -> torch.device:
    """The torch device of a ``Device`` choice (``facecl.device.resolve_device``)."""
    from facecl.device import resolve_device as resolve

    return torch.device(resolve(name))


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Step schedule: lr * lr_factor ** (number of milestones <= step)."""
    return cfg.lr * cfg.lr_factor ** sum(step >= m for m in cfg.milestones())


# --------------------------------------------------------------------------- one step


def train_step(
    net: nn.Module,
    head: nn.Module,
    center: CenterLossBase,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lam: float,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One SGD iteration of ECCV Alg. 1. Returns (detached loss terms, features (B, D)).

    ``net(images, labels) -> (features, logits)`` (a ``FaceNet``, possibly DDP-wrapped);
    ``head`` is the unwrapped head (ACL reads its weights). Terms: ``loss`` (the total) and
    ``softmax`` (cross entropy of the head's logits), then the center loss's own terms
    (``center``: L_C before lambda; ``invariant`` for CIL), all 0-d tensors on the device:
    nothing here waits for the device (the loop converts them at log steps only).
    """
    with autocast(images.device.type, amp_dtype):
        feats, logits = net(images, labels)  # (B, D), (B, C)
    softmax = F.cross_entropy(logits.float(), labels)
    extra, parts = center.objective(feats, labels, head, lam)  # lambda L_C (+ gamma L_I)
    loss = softmax + extra
    optimizer.zero_grad(set_to_none=True)
    # Alg. 1 line 6 (global batch in DDP; the sampler gives every rank the same batch size)
    if scaler is None:
        loss.backward()
        center.update_centers(feats.detach(), labels, head, same_size=True)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # the inf check, before anything moves
        # A step the scaler skips must not move the centers either (nor write inf into them).
        keep = ~found_inf(scaler, optimizer)
        center.update_centers(feats.detach(), labels, head, keep=keep, same_size=True)
        scaler.step(optimizer)
        scaler.update()
    terms = {"loss": loss.detach(), "softmax": softmax.detach()}
    terms.update(parts)
    return terms, feats.detach()


# --------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """What ``train`` sets up once and every step reads."""

    cfg: TrainConfig
    state: TrainState
    net: nn.Module  # state.net, DDP-wrapped under world > 1
    sampler: StepBatchSampler
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]]
    work: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    info: dict[str, Any]
    n_train: int
    start: int
    world: int
    lead: bool
    window: Window
    rank: int = 0
    total_wait: float = 0.0
    total_t0: float = field(default_factory=time.perf_counter)
    record: dict[str, Any] | None = None

    @property
    def metrics_path(self) -> Path:
        return self.work / METRICS

    @property
    def saves(self) -> bool:
        """Whether this rank takes part in writing checkpoints: rank 0, and every rank of a
        class-sharded run (each writes its own rows)."""
        return self.lead or self.state.shard is not None

    def payload(self, with_optimizer: bool) -> dict[str, Any]:
        return checkpoint_payload(
            self.state,
            self.cfg,
            step=self.state.step,
            with_optimizer=with_optimizer,
            info=self.info,
            window=self.window.payload() if with_optimizer else None,
        )

    def save_last(self) -> None:
        """The full checkpoint at the current step: ``checkpoints/last.pt`` by rank 0, or
        under ``--shard-classes`` ``checkpoints/last/`` with every rank's own rows."""
        payload = self.payload(with_optimizer=True)
        if self.state.shard is not None:
            save_sharded(self.work, self.state, payload, self.rank, self.world)
        elif self.lead:
            save_checkpoint(self.work / CHECKPOINTS / LAST, payload)
            drop_other(self.work, "file")  # a sharded checkpoint this run resumed from

    def save_model(self) -> None:
        """The final ``model.pt`` by rank 0 (a class-sharded run's: the backbone only)."""
        payload = self.payload(with_optimizer=False)
        if self.lead:
            save_checkpoint(self.work / MODEL, payload)


def _arch_kwargs(cfg: TrainConfig, dataset: Any, extra: dict[str, Any] | None) -> dict[str, Any]:
    h, w = (int(s) for s in dataset.image_size)
    kwargs: dict[str, Any] = {"input_size": [h, w]}
    if cfg.feature_dim is not None:
        kwargs["feature_dim"] = cfg.feature_dim
    kwargs.update(extra or {})
    return kwargs


def _setup(
    cfg: TrainConfig,
    dataset: Any,
    work: Path,
    arch_kwargs: dict[str, Any] | None,
    device: torch.device,
    rank: int,
    world: int,
    info: dict[str, Any],
) -> _Run:
    """Build the state, resume from ``checkpoints/last.pt`` when there is one, and start the
    batch stream at the resumed step."""
    if rank == 0:
        (work / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # the input size is fixed for the whole run
    kwargs = _arch_kwargs(cfg, dataset, arch_kwargs)
    num_classes = int(dataset.num_classes)
    spec = dataset_input_spec(dataset, kwargs)
    counts = dataset_class_counts(dataset, num_classes)  # CIL's N_j (Wu's num_data)
    shard = None
    if cfg.shard_classes:
        from facecl.losses.distributed import class_range
        from facecl.train.shard_classes import check_shard_classes

        check_shard_classes(cfg, world, num_classes)
        shard = class_range(num_classes, rank, world)
    state = build_state(
        cfg, num_classes, kwargs, device, input_spec=spec, class_counts=counts, shard=shard
    )
    start, window = 0, Window()
    rows = (shard.lo, shard.hi) if shard is not None else (None, None)
    ckpt = load_last(work, *rows, num_classes=num_classes)  # last.pt or last/, on the CPU
    if ckpt is not None:
        state.step = restore(state, ckpt, cfg)
        start, window = state.step, Window.from_checkpoint(ckpt)
    state.step = start
    net: nn.Module = state.net
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        # a class-sharded head stays out of DDP's all-reduce: DDP wraps the backbone only
        wrapped = state.net.backbone if shard is not None else state.net
        net = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
    amp_dtype = None
    if device.type == "cuda" and cfg.amp:
        amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16
    weights = None
    if cfg.sampler == "balanced":
        weights = balanced_weights(dataset.labels, num_classes)
    sampler = StepBatchSampler(
        len(dataset), cfg.batch_size, cfg.steps, cfg.seed, start, rank, world, weights
    )
    batches = iterate_batches(dataset, sampler, cfg.workers, device.type == "cuda")
    if rank == 0:
        truncate_metrics(work / METRICS, start)
    info = {"world": world, **info}
    return _Run(
        cfg=cfg,
        state=state,
        net=net,
        sampler=sampler,
        batches=batches,
        work=work,
        device=device,
        amp_dtype=amp_dtype,
        info=info,
        n_train=len(dataset),
        start=start,
        world=world,
        lead=rank == 0,
        window=window,
        rank=rank,
    )


def _log(run: _Run, step: int, stats: dict[str, float]) -> dict[str, Any]:
    """The record of the window ending after ``step`` (written by rank 0), with the center
    ``stats`` of this step's batch; a new window."""
    cfg, window = run.cfg, run.window
    means = window.means(run.world, run.device)
    done = step + 1
    if not all(math.isfinite(v) for v in means.values()):
        raise DivergedError(
            f"training diverged before step {done} (loss {means['loss']})",
            "lower --lr or --lambda",
        )
    elapsed = window.elapsed()
    record = {
        "step": done,
        "epoch": done * cfg.batch_size / run.n_train,
        "lr": lr_at(cfg, step),
        **means,
        "weighted_center": cfg.lam * means.get("center", 0.0),
        "images_per_s": window.steps * cfg.batch_size / elapsed,
        "loader_wait_share": window.wait / elapsed,
        **stats,
    }
    if run.lead:
        append_record(run.metrics_path, record)
    run.window = Window()
    return record


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor on ``device`` without a host sync: pinned, then copied
    ``non_blocking`` (a pageable copy to CUDA blocks the host)."""
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _one_step(
    run: _Run, step: int, images: torch.Tensor, labels: torch.Tensor, wait: float
) -> dict[str, Any] | None:
    """Flips, lr, the SGD step, and at log / checkpoint steps the record / checkpoint."""
    cfg, state = run.cfg, run.state
    images = images.to(run.device, non_blocking=True)  # (B, C, H, W)
    labels = labels.to(run.device, non_blocking=True)  # (B,)
    if cfg.flip:
        mask = flip_mask(cfg.seed, step, cfg.batch_size)[run.sampler.rank_slice]  # (B,)
        mask = _to_device(mask, run.device)[:, None, None, None]
        images = torch.where(mask, images.flip(-1), images)
    for group in state.optimizer.param_groups:
        group["lr"] = lr_at(cfg, step)
    head = state.net.head
    set_step = getattr(head, "set_step", None)
    if set_step is not None:
        set_step(step)  # SphereFace's lambda annealing
    state.center.set_step(step)  # the center rate alpha * alpha_decay^step
    step_fn = _sharded_step if state.shard is not None else _plain_step
    terms, stats = step_fn(run, images, labels)
    run.window.add(terms, wait)
    run.total_wait += wait
    done = state.step = step + 1
    record = None
    if done % cfg.log_every == 0 or done == cfg.steps:
        record = run.record = _log(run, step, stats())
    if run.saves and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
        run.save_last()
    return record


StepResult = tuple[dict[str, torch.Tensor], Callable[[], dict[str, float]]]


def _modules(
    run: _Run,
) -> tuple[nn.Module, nn.Module, CenterLossBase, torch.optim.Optimizer]:
    """The step's (net, head, center loss, optimiser): ``net`` as DDP wraps it."""
    return run.net, run.state.net.head, run.state.center, run.state.optimizer


def _step_options(run: _Run) -> dict[str, Any]:
    """The keyword options both train steps take: lambda, the grad scaler, the AMP dtype."""
    return {"lam": run.cfg.lam, "scaler": run.state.scaler, "amp_dtype": run.amp_dtype}


def _plain_step(run: _Run, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
    """``train_step``; the center stats of the batch, computed when a log step asks."""
    state, head = run.state, run.state.net.head
    terms, feats = train_step(*_modules(run), images, labels, **_step_options(run))
    return terms, lambda: state.center.stats(feats, labels, head)


def _sharded_step(run: _Run, images: torch.Tensor, labels: torch.Tensor) -> StepResult:
    """``--shard-classes``: ``facecl.train.shard_classes.sharded_train_step``."""
    from facecl.losses.sharded import shard_stats
    from facecl.train.shard_classes import sample_seed, sharded_train_step

    state, head = run.state, run.state.net.head
    terms, feats, local = sharded_train_step(
        *_modules(run),
        images,
        labels,
        **_step_options(run),
        world=run.world,
        sample_rate=run.cfg.sample_rate,
        sample_seed=sample_seed(run.cfg.seed, state.step),
    )
    return terms, lambda: shard_stats(state.center, feats, local, head)


def _steps(run: _Run, stop: StopFlag | None, on_progress: ProgressFn | None) -> bool:
    """Run the remaining steps; True when a stop was requested before the end."""
    for step in range(run.start, run.cfg.steps):
        if stop is not None and stop.requested:
            return True
        t = time.perf_counter()
        try:
            images, labels = next(run.batches)
        except (StopIteration, RuntimeError):
            if stop is not None and stop.requested:  # loader workers got the signal too
                return True
            raise
        record = _one_step(run, step, images, labels, time.perf_counter() - t)
        if on_progress is not None:
            on_progress(step + 1, record)
    return False


def train(
    cfg: TrainConfig,
    dataset: Any,
    work_dir: str | Path,
    *,
    arch_kwargs: dict[str, Any] | None = None,
    device: torch.device | None = None,
    rank: int = 0,
    world: int = 1,
    stop: StopFlag | None = None,
    info: dict[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train on ``dataset`` (map-style, items ``(image (C, H, W) float, label)``, attributes
    ``num_classes`` and ``image_size``; ``labels`` for the balanced sampler; ``input_spec``
    when it knows its crop geometry), writing ``checkpoints/last.pt``, ``metrics.jsonl`` and
    ``model.pt`` under ``work_dir`` (rank 0).

    Resumes from ``work_dir/checkpoints/last.pt`` when it exists. Under DDP (``world > 1``)
    the process group must be initialised; each rank gets ``batch_size / world`` samples.
    ``on_progress(step, record)`` is called after every step (record at log steps, else None).
    A requested ``stop`` checkpoints and raises KeyboardInterrupt. Returns a summary (last
    metrics record, overall images/s and loader wait share).
    """
    device = device or resolve_device(cfg.device)
    run = _setup(cfg, dataset, Path(work_dir), arch_kwargs, device, rank, world, dict(info or {}))
    if _steps(run, stop, on_progress):
        if run.saves and run.state.step > run.start:
            run.save_last()
        raise KeyboardInterrupt
    elapsed = max(time.perf_counter() - run.total_t0, 1e-9)
    if run.lead:
        run.save_model()
    return {
        "steps": cfg.steps,
        "resumed_from": run.start,
        "images_per_s": (cfg.steps - run.start) * cfg.batch_size / elapsed,
        "loader_wait_share": run.total_wait / elapsed,
        "final": read_metrics(run.metrics_path)[-1]
        if run.lead and run.metrics_path.is_file()
        else run.record,
        "device": str(device),
        "world": world,
    }


def feature_batches(
    backbone: nn.Module,
    images: torch.Tensor,
    batch: int = 512,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Features (N, D) of a tensor of images (N, C, H, W) in eval mode, batched."""
    device = device or next(backbone.parameters()).device
    backbone.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(backbone(images[i : i + batch].to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, int(cast(Any, backbone).feature_dim))
