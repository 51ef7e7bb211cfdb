"""``--shard-classes``: the train step and checkpoints of a class-sharded head and centers.

Each rank's head and center loss hold the rows of one ``ClassRange`` (``state.shard``, the
``class_range`` attribute of both modules; their ``state_dict()`` is the rank's shard and
their ``class_rows`` name the keys split by class). DDP wraps the backbone only: the head
rows and the centers never enter its all-reduce, their gradients and momentum stay on the
rank (the SGD param groups are one process's, so decay, momentum and the lr schedule are
the same). The math is ``facecl.losses.sharded``'s.

Checkpoints: every rank writes its own rows (``facecl.train.last.save_sharded``, the
layout is ``facecl.train.sharded_checkpoint``'s) and reads only the files of its rows, on
any world size; ``model.pt`` holds the backbone only. A sharded run resuming from a
one-process ``last.pt`` slices each rank's rows out of it (``facecl.train.last.slice_rows``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from facecl.errors import UsageError
from facecl.losses.center import CenterLossBase
from facecl.losses.distributed import ClassRange
from facecl.losses.sharded import (
    gather_features,
    gather_labels,
    sample_classes,
    shard_objective,
    shard_update,
    sharded_cross_entropy,
)
from facecl.train.amp import autocast, found_inf, found_inf_flags
from facecl.train.config import TrainConfig


def check_shard_classes(cfg: TrainConfig, world: int, num_classes: int | None = None) -> None:
    """``--shard-classes`` needs a process group of >= 2 ranks, and a class per rank;
    ``--sample-rate`` < 1 needs ``--shard-classes``."""
    if cfg.sample_rate < 1 and not cfg.shard_classes:
        raise UsageError(
            f"--sample-rate {cfg.sample_rate:g} samples the classes of a --shard-classes run",
            "add --shard-classes (with --ddp N >= 2 or torchrun), or drop --sample-rate",
        )
    if not cfg.shard_classes:
        return
    if world < 2:
        raise UsageError(
            "--shard-classes splits the head over DDP ranks, but this run has one process",
            "add --ddp N (N >= 2) or start it with torchrun, or drop --shard-classes",
        )
    if num_classes is not None and num_classes < world:
        raise UsageError(
            f"--shard-classes over {world} ranks needs >= {world} classes, got {num_classes}",
            f"use --ddp {max(num_classes, 2)} or fewer, or drop --shard-classes",
        )


def sample_seed(seed: int, step: int) -> int:
    """The ``--sample-rate`` draw of this rank at ``step``: from (seed, step, rank), so a
    resumed run on the same ranks draws the same classes."""
    import numpy as np

    words = np.random.SeedSequence([int(seed), int(step), dist.get_rank()]).generate_state(2)
    return int(words[0]) << 32 | int(words[1])


def _gather_found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
    """Every rank skips the step if any rank's head rows overflowed (the backbone's grads
    are all-reduced already, the head's are not)."""
    for flag in found_inf_flags(scaler, optimizer):
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)


def sharded_train_step(
    backbone: nn.Module,
    head: nn.Module,
    center: CenterLossBase,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    lam: float,
    world: int,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    sample_rate: float = 1.0,
    sample_seed: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """``loop.train_step`` with the classes sharded: ``backbone`` is the DDP-wrapped
    backbone, ``head`` / ``center`` this rank's shard. ``sample_rate`` < 1: the softmax
    runs over the batch's classes and a ``sample_seed``-seeded draw of the others
    (``sample_classes``); the center terms are the exact ones. Returns (the global batch's
    detached loss terms, the global features (B, D) detached, their labels local to this
    shard)."""
    shard: ClassRange = center.class_range
    with autocast(images.device.type, amp_dtype):
        feats = backbone(images)  # (b, D), this rank's slice of the batch
        x = gather_features(feats, grad_scale=float(world))  # (B, D); DDP averages
        _, local = shard.local_labels(gather_labels(labels))  # (B,) -1 = another rank's
        if sample_rate < 1:
            gen = torch.Generator().manual_seed(sample_seed)
            rows, target = sample_classes(local, shard.size, sample_rate, gen)
            logits = head(x, target, rows)  # (B, K) the sampled classes
        else:
            target, logits = local, head(x, local)  # (B, C_r)
    softmax = sharded_cross_entropy(logits, target, shard)
    extra, parts = shard_objective(center, x, local, head, lam)
    loss = softmax + extra
    optimizer.zero_grad(set_to_none=True)
    keep = None
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        _gather_found_inf(scaler, optimizer)
        keep = ~found_inf(scaler, optimizer)
    shard_update(center, x.detach(), local, head, keep=keep)  # Alg. 1 line 6
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    extra_logged = sum(v for k, v in parts.items() if k != "center")
    total = softmax.detach() + lam * parts["center"] + extra_logged
    terms = {"loss": total, "softmax": softmax.detach(), **parts}
    return terms, x.detach(), local
