"""The training loop: plain functions with explicit arguments, no globals.

One step follows ECCV Alg. 1: forward the mini-batch, L = L_S + lambda L_C (+ CIL's gamma L_I),
backpropagate, update the centers by the paper's rule (line 6, with the features of this
forward pass, before the parameters move), then the SGD step (line 7).

Determinism: everything random is derived from ``(seed, step)`` -- the data order (a seeded
permutation per epoch, or seeded class-balanced draws), the flips, and the initial weights
(``torch.manual_seed(seed)`` before building). A run that resumes from a checkpoint at step
s therefore sees exactly the batches an uninterrupted run sees from step s, and on CPU ends
with identical weights. Under DDP every rank computes the same global batch order and takes
its contiguous slice, so N processes see what one process sees with the global batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facecl.artifacts import config_dict
from facecl.errors import ConfigError, FaceclError
from facecl.train.checkpoint import load_checkpoint, save_checkpoint
from facecl.train.config import TrainConfig

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"

_TAG_ORDER, _TAG_FLIP = 1, 2


class DivergedError(FaceclError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------- small pieces


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` fails clearly without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but no CUDA device is available", "use --device cpu")
    return torch.device(name)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Step schedule: lr * lr_factor ** (number of milestones <= step)."""
    return cfg.lr * cfg.lr_factor ** sum(step >= m for m in cfg.milestones())


def _generator(seed: int, tag: int, k: int) -> torch.Generator:
    mixed = (seed * 1_000_003 + tag * 7_919 + k * 104_729) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def flip_mask(seed: int, step: int, global_batch: int) -> torch.Tensor:
    """Which samples of the global batch of ``step`` are flipped (p = 0.5): (GB,) bool."""
    return torch.rand(global_batch, generator=_generator(seed, _TAG_FLIP, step)) < 0.5


class StepBatchSampler:
    """The indices of every step's batch, a pure function of ``(seed, step)``.

    The global stream is the concatenation of per-epoch orders (a seeded permutation, or
    ``n`` seeded draws with replacement weighted by ``weights`` for the balanced sampler).
    Step t takes stream positions [t GB, (t + 1) GB); rank r takes its contiguous share
    [r GB / world, (r + 1) GB / world) of that global batch.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        steps: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
    ):
        if n < 1:
            raise ConfigError("the training set is empty", "check the pack and --split")
        if global_batch % world:
            raise ConfigError(
                f"batch size {global_batch} does not split over {world} processes",
                f"use a multiple of {world}",
            )
        self.n, self.gb, self.steps, self.seed = n, global_batch, steps, seed
        self.start, self.rank, self.world = start, rank, world
        self.local = global_batch // world
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self._cache: dict[int, torch.Tensor] = {}

    def epoch_order(self, epoch: int) -> torch.Tensor:  # (n,) int64
        order = self._cache.get(epoch)
        if order is None:
            g = _generator(self.seed, _TAG_ORDER, epoch)
            if self.weights is None:
                order = torch.randperm(self.n, generator=g)
            else:
                order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
            self._cache = {e: o for e, o in self._cache.items() if e >= epoch - 1}
            self._cache[epoch] = order
        return order

    def batch(self, step: int) -> list[int]:
        lo = step * self.gb + self.rank * self.local
        out: list[int] = []
        pos = lo
        while len(out) < self.local:
            epoch, off = divmod(pos, self.n)
            take = min(self.local - len(out), self.n - off)
            out.extend(self.epoch_order(epoch)[off : off + take].tolist())
            pos += take
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def iterate_batches(
    dataset: Any, sampler: StepBatchSampler, workers: int, pin: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images (B, C, H, W) float, labels (B,) int64) per step.

    A dataset with ``get_batch(indices)`` (in-memory arrays) is indexed directly; any other
    map-style dataset goes through a DataLoader with ``workers`` processes.
    """
    if hasattr(dataset, "get_batch"):
        for idx in sampler:
            yield dataset.get_batch(idx)
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    for images, labels in loader:
        yield images, torch.as_tensor(labels, dtype=torch.long)


# --------------------------------------------------------------------------- the model


class FaceNet(nn.Module):
    """Backbone + classification head as one module (what DDP wraps)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(images)  # (B, D)
        return feats, self.head(feats, labels)  # (B, D), (B, C)


@dataclass
class TrainState:
    """Everything that changes during training (and goes into a checkpoint)."""

    net: FaceNet
    center: nn.Module  # a facecl.losses CenterLossBase
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    arch_kwargs: dict[str, Any]
    num_classes: int
    step: int = 0


def validate_names(cfg: TrainConfig) -> None:
    """Fail early (UnknownNameError listing the valid names) on a wrong arch/head/loss."""
    from facecl.losses import CENTER_LOSSES, HEADS
    from facecl.models import BACKBONES, list_backbones

    list_backbones()  # loads the built-in backbones
    BACKBONES.get(cfg.arch)
    HEADS.get(cfg.head)
    CENTER_LOSSES.get(cfg.loss)


def build_state(
    cfg: TrainConfig,
    num_classes: int,
    arch_kwargs: dict[str, Any],
    device: torch.device,
) -> TrainState:
    """Backbone, head, center loss and optimiser, initialised from ``cfg.seed``."""
    from facecl.losses import create_center_loss, create_head
    from facecl.models import create_backbone

    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.arch, **arch_kwargs)
    dim = int(backbone.feature_dim)
    head = create_head(cfg.head, dim, num_classes)
    center = create_center_loss(
        cfg.loss, num_classes, dim, alpha=cfg.alpha, rho=cfg.rho, gamma=cfg.gamma
    )
    net = FaceNet(backbone, head).to(device)
    center = center.to(device)
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if name.endswith("bias") else decay).append(p)
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    scaler = None
    if device.type == "cuda" and cfg.amp and cfg.amp_dtype == "float16":
        scaler = torch.amp.GradScaler("cuda")
    return TrainState(net, center, optimizer, scaler, dict(arch_kwargs), num_classes)


def train_step(
    net: nn.Module,
    head: nn.Module,
    center: nn.Module,
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
    ``head`` is the unwrapped head (ACL reads its weights). Terms: ``loss`` (the total),
    ``softmax`` (cross entropy of the head's logits), ``center`` (L_C, before lambda) and any
    extra term of the center loss (``invariant`` for CIL), all as 0-d tensors.
    """
    ctx = (
        torch.autocast(images.device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    with ctx:
        feats, logits = net(images, labels)  # (B, D), (B, C)
    softmax = F.cross_entropy(logits.float(), labels)
    parts = center.terms(feats, labels, head)  # {"center": L_C, "invariant": ...}
    loss = softmax + lam * parts["center"]
    for key, value in parts.items():
        if key != "center":
            loss = loss + value
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    center.update_centers(feats.detach(), labels, head)  # Alg. 1 line 6 (global batch in DDP)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    terms = {"loss": loss.detach(), "softmax": softmax.detach()}
    terms.update({k: v.detach() for k, v in parts.items()})
    return terms, feats.detach()


# --------------------------------------------------------------------------- checkpoints


def checkpoint_payload(
    state: TrainState,
    cfg: TrainConfig,
    *,
    step: int,
    with_optimizer: bool,
    info: dict[str, Any],
    window: tuple[dict[str, torch.Tensor], int] | None = None,
) -> dict[str, Any]:
    net = state.net
    payload = {
        "arch": cfg.arch,
        "arch_kwargs": state.arch_kwargs,
        "feature_dim": int(net.backbone.feature_dim),
        "input_size": list(net.backbone.input_size),
        "loss": cfg.loss,
        "head": cfg.head,
        "num_classes": state.num_classes,
        "config": config_dict(cfg),
        "model": net.backbone.state_dict(),
        "head_state": net.head.state_dict(),
        "loss_state": state.center.state_dict(),
        "step": int(step),
        **info,
    }
    if with_optimizer:
        payload["optimizer"] = state.optimizer.state_dict()
        payload["scaler"] = state.scaler.state_dict() if state.scaler is not None else {}
        payload["rng"] = {"torch": torch.get_rng_state()}
        if window is not None:  # the partial metrics window, so a resumed run logs the same
            sums, n = window
            payload["metrics_window"] = {k: torch.as_tensor(v).cpu() for k, v in sums.items()}
            payload["metrics_window_steps"] = n
    else:
        payload["optimizer"] = {}
    return payload


def restore(state: TrainState, ckpt: dict[str, Any], cfg: TrainConfig) -> int:
    """Load a checkpoint written by this run's config into ``state``; returns its step."""
    if ckpt.get("config") != config_dict(cfg):
        raise ConfigError(
            "the checkpoint in the run directory was written with another config",
            "use --force to start the run afresh",
        )
    state.net.backbone.load_state_dict(ckpt["model"])
    state.net.head.load_state_dict(ckpt["head_state"])
    state.center.load_state_dict(ckpt["loss_state"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"]["torch"])
    return int(ckpt["step"])


# --------------------------------------------------------------------------- metrics


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only records up to ``step`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (ValueError, KeyError):
            break  # a torn last line from a kill
    path.write_text("".join(k + "\n" for k in keep))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _window_means(window: dict[str, torch.Tensor], steps: int, world: int) -> dict[str, float]:
    """Mean of each loss term over the log window (and over the ranks under DDP, so the
    record is the global batch's loss as one process would log it)."""
    keys = sorted(window)
    vec = torch.stack([torch.as_tensor(window[k]).float() for k in keys]) / steps  # (K,)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(vec)
        vec = vec / world
    return dict(zip(keys, vec.tolist(), strict=True))


class StopFlag:
    """Set by a signal handler; the loop checks it between steps."""

    def __init__(self) -> None:
        self.requested = False


# --------------------------------------------------------------------------- the loop


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
    on_progress: Callable[[int, dict[str, Any] | None], None] | None = None,
) -> dict[str, Any]:
    """Train on ``dataset`` (map-style, items ``(image (C, H, W) float, label)``, attributes
    ``num_classes`` and ``image_size``; ``labels`` for the balanced sampler), writing
    ``checkpoints/last.pt``, ``metrics.jsonl`` and ``model.pt`` under ``work_dir`` (rank 0).

    Resumes from ``work_dir/checkpoints/last.pt`` when it exists. Under DDP (``world > 1``)
    the process group must be initialised; each rank gets ``batch_size / world`` samples.
    ``on_progress(step, record)`` is called after every step (record at log steps, else None).
    Returns a summary (last metrics record, overall images/s and loader wait share).
    """
    work = Path(work_dir)
    ckpt_dir = work / CHECKPOINTS
    lead = rank == 0
    if lead:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    device = device or resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    h, w = (int(s) for s in dataset.image_size)
    kwargs: dict[str, Any] = {"input_size": [h, w]}
    if cfg.feature_dim is not None:
        kwargs["feature_dim"] = cfg.feature_dim
    kwargs.update(arch_kwargs or {})
    num_classes = int(dataset.num_classes)
    state = build_state(cfg, num_classes, kwargs, device)
    info = dict(info or {})
    info.setdefault("world", world)

    start = 0
    last = ckpt_dir / LAST
    window: dict[str, torch.Tensor] = {}
    win_steps = 0
    if last.is_file():
        ckpt = load_checkpoint(last, map_location=str(device))
        start = restore(state, ckpt, cfg)
        window = dict(ckpt.get("metrics_window", {}))
        win_steps = int(ckpt.get("metrics_window_steps", 0))
    state.step = start

    net: nn.Module = state.net
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            state.net, device_ids=[device.index] if device.type == "cuda" else None
        )
    head, center = state.net.head, state.center
    amp_dtype = None
    if device.type == "cuda" and cfg.amp:
        amp_dtype = torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16

    weights = None
    if cfg.sampler == "balanced":
        labels = np.asarray(dataset.labels)
        counts = np.bincount(labels, minlength=num_classes)
        weights = 1.0 / counts[labels]
    sampler = StepBatchSampler(
        len(dataset), cfg.batch_size, cfg.steps, cfg.seed, start, rank, world, weights
    )
    batches = iterate_batches(dataset, sampler, cfg.workers, device.type == "cuda")
    metrics_path = work / METRICS
    if lead:
        _truncate_metrics(metrics_path, start)

    win_wait, win_t0 = 0.0, time.perf_counter()
    total_wait, total_t0, record = 0.0, time.perf_counter(), None
    lo, hi = rank * sampler.local, (rank + 1) * sampler.local
    step = start
    stopped = False
    try:
        for step in range(start, cfg.steps):
            if stop is not None and stop.requested:
                stopped = True
                break
            t = time.perf_counter()
            try:
                images, labels = next(batches)
            except (StopIteration, RuntimeError):
                if stop is not None and stop.requested:  # loader workers got the signal too
                    stopped = True
                    break
                raise
            wait = time.perf_counter() - t
            win_wait += wait
            total_wait += wait
            images = images.to(device, non_blocking=True)  # (B, C, H, W)
            labels = labels.to(device, non_blocking=True)  # (B,)
            if cfg.flip:
                mask = flip_mask(cfg.seed, step, cfg.batch_size)[lo:hi].to(device)  # (B,)
                images = torch.where(mask[:, None, None, None], images.flip(-1), images)
            for group in state.optimizer.param_groups:
                group["lr"] = lr_at(cfg, step)
            if hasattr(head, "set_step"):
                head.set_step(step)
            terms, feats = train_step(
                net,
                head,
                center,
                state.optimizer,
                images,
                labels,
                lam=cfg.lam,
                scaler=state.scaler,
                amp_dtype=amp_dtype,
            )
            for k, v in terms.items():
                window[k] = window.get(k, 0.0) + v
            win_steps += 1
            done = step + 1
            state.step = done
            record = None
            if done % cfg.log_every == 0 or done == cfg.steps:
                means = _window_means(window, win_steps, world)
                if not all(math.isfinite(v) for v in means.values()):
                    raise DivergedError(
                        f"training diverged before step {done} (loss {means['loss']})",
                        "lower --lr or --lambda",
                    )
                elapsed = max(time.perf_counter() - win_t0, 1e-9)
                record = {
                    "step": done,
                    "epoch": done * cfg.batch_size / len(dataset),
                    "lr": lr_at(cfg, step),
                    **means,
                    "weighted_center": cfg.lam * means.get("center", 0.0),
                    "images_per_s": win_steps * cfg.batch_size / elapsed,
                    "loader_wait_share": win_wait / elapsed,
                    **center.stats(feats, labels, head),
                }
                if lead:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                window, win_steps, win_wait, win_t0 = {}, 0, 0.0, time.perf_counter()
            if lead and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                payload = checkpoint_payload(
                    state,
                    cfg,
                    step=done,
                    with_optimizer=True,
                    info=info,
                    window=(window, win_steps),
                )
                save_checkpoint(last, payload)
            if on_progress is not None:
                on_progress(done, record)
    finally:
        if stopped and lead and state.step > start:
            payload = checkpoint_payload(
                state,
                cfg,
                step=state.step,
                with_optimizer=True,
                info=info,
                window=(window, win_steps),
            )
            save_checkpoint(last, payload)
    if stopped:
        raise KeyboardInterrupt
    elapsed = max(time.perf_counter() - total_t0, 1e-9)
    if lead:
        save_checkpoint(
            work / MODEL,
            checkpoint_payload(state, cfg, step=state.step, with_optimizer=False, info=info),
        )
    return {
        "steps": cfg.steps,
        "resumed_from": start,
        "images_per_s": (cfg.steps - start) * cfg.batch_size / elapsed,
        "loader_wait_share": total_wait / elapsed,
        "final": read_metrics(metrics_path)[-1] if lead and metrics_path.is_file() else record,
        "device": str(device),
        "world": world,
    }


def feature_batches(
    backbone: nn.Module,
    images: torch.Tensor | Sequence,
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
    return torch.cat(out) if out else torch.zeros(0, int(backbone.feature_dim))
