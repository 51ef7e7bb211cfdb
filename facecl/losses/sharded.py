"""Model-parallel head and centers (``--shard-classes``), Partial FC's approach.

Rank r holds the classes ``[lo_r, hi_r)`` (``facecl.losses.distributed.class_range``): its
rows of the head weight (and bias) and of the center state. Each step:

1. the features (B/world, D) of every rank are all-gathered into the global batch (B, D)
   (``gather_features``, with autograd: the backward sums the ranks' partial gradients and
   hands each rank its own rows);
2. every rank computes the logits of its classes (B, C_r), with the labels made local to
   its range (-1 = another rank's class: no margin here, ``facecl.losses.heads``);
3. the softmax normaliser (max and sum of exp) is all-reduced and the target logit is taken
   on its owner rank (``sharded_cross_entropy``): every rank gets the global loss, and the
   gradient of its own logits;
4. the center terms of a sample are computed on its class's owner rank, over the samples
   of its classes in the gathered batch (``shard_objective``), and the centers move there
   (``CenterLossBase.apply_update``, the same hooks as one process).

The sum over ranks of each rank's gradient of its features is one process's gradient on
the global batch; DDP averages the backbone's gradients over the ranks, so
``gather_features`` scales its backward by the world size (``grad_scale``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from facecl.losses.center import CenterLossBase, NoCenterLoss, distance_stats, upcast
from facecl.losses.distributed import ClassRange, gather_batch


class _GatherFeatures(torch.autograd.Function):
    """All-gather (b, D) rows of every rank (same b); backward: all-reduce, own rows."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, grad_scale: float) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        ctx.grad_scale = grad_scale
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total)  # sum of every rank's partial gradient of the global batch
        lo, hi = ctx.rows
        return total[lo:hi] * ctx.grad_scale, None


def gather_features(x: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """The global batch (world * b, D) of every rank's features (b, D), rank 0's first, with
    autograd: the gradient of ``x`` is the sum over the ranks of their gradients of its rows,
    times ``grad_scale`` (the world size under DDP, which averages the backbone's)."""
    return _GatherFeatures.apply(x, grad_scale)


def gather_labels(y: torch.Tensor) -> torch.Tensor:
    """The global batch's labels (world * b,), rank 0's first."""
    parts = [torch.empty_like(y) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, y.contiguous())
    return torch.cat(parts)


class _ShardedCrossEntropy(torch.autograd.Function):
    """Mean cross entropy of logits split by class over the ranks; see ``sharded_cross_entropy``."""

    @staticmethod
    def forward(
        ctx: Any, logits: torch.Tensor, local: torch.Tensor, shard: ClassRange
    ) -> torch.Tensor:
        n = logits.shape[0]
        own = local >= 0  # (N,)
        idx = local.clamp_min(0).view(-1, 1)  # (N, 1)
        with torch.no_grad():
            top = logits.max(dim=1, keepdim=True).values  # (N, 1)
            _reduce(top, shard, dist.ReduceOp.MAX)
            prob = (logits - top).exp_()  # (N, C_r)
            norm = prob.sum(dim=1, keepdim=True)  # (N, 1)
            _reduce(norm, shard)
            prob.div_(norm)  # softmax over all C classes, this rank's columns
            target = torch.where(own, logits.gather(1, idx).squeeze(1) - top.squeeze(1), 0.0)
            _reduce(target, shard)  # z_y - max, from the owner rank
            loss = (norm.squeeze(1).log() - target).sum() / max(n, 1)
        ctx.save_for_backward(prob, idx, own)
        ctx.n = n
        return loss

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        prob, idx, own = ctx.saved_tensors
        out = prob.clone()  # d loss / d z = (softmax - onehot) / N
        out.scatter_add_(1, idx, -own.to(out.dtype).unsqueeze(1))
        return out * (grad / max(ctx.n, 1)), None, None


def _reduce(t: torch.Tensor, shard: ClassRange, op: Any = None) -> None:
    if shard.sharded:
        dist.all_reduce(t, op=op if op is not None else dist.ReduceOp.SUM)


def sharded_cross_entropy(
    logits: torch.Tensor, local: torch.Tensor, shard: ClassRange
) -> torch.Tensor:
    """``F.cross_entropy`` of the global batch when each rank holds the logits of its
    classes: ``logits`` (N, C_r) of this rank's range, ``local`` (N,) the labels local to
    it (-1 where another rank holds the class). Every rank returns the same global mean;
    the backward gives this rank's columns of the gradient. Unsharded it is the plain
    cross entropy (no collectives)."""
    return _ShardedCrossEntropy.apply(logits.float(), local, shard)


def shard_objective(
    center: CenterLossBase,
    x: torch.Tensor,
    local: torch.Tensor,
    head: nn.Module,
    lam: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This rank's part of ``center.objective`` on the global batch x (N, D): the terms of
    the samples whose class it holds (``local`` >= 0), each term's 1/m over all N samples.
    Returns (its share of lambda L_C + extras, the global terms summed over the ranks,
    detached, as the logs of one process)."""
    own = local >= 0
    n = x.shape[0]
    mine = own.nonzero().squeeze(1)  # (n_r,)
    share = mine.numel() / max(n, 1)  # the hooks divide by n_r; the batch's m is n
    total, parts = center.objective(x[mine], local[mine], head, lam)
    logged = torch.stack([v.detach().float() * share for v in parts.values()])
    _reduce(logged, center.class_range)
    return total * share, dict(zip(parts, logged, strict=True))


@torch.no_grad()
def sample_classes(
    local: torch.Tensor, size: int, rate: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial FC's sampling of one shard's classes (``--sample-rate``): every class of the
    batch (``local`` >= 0) and random others, ``max(int(rate * size), positives)`` in all.
    Returns (the kept rows (K,) in increasing order, the labels as indices into them (-1
    where another rank holds the class)). ``generator`` (CPU) makes the draw repeatable."""
    own = local >= 0
    score = torch.rand(size, generator=generator).to(local.device)  # (C_r,)
    score[local[own]] = 2.0  # positives first
    k = max(int(rate * size), int((score > 1).sum()), 1)
    rows = score.topk(min(k, size)).indices.sort().values  # (K,)
    sub = torch.searchsorted(rows, local.clamp_min(0))
    return rows, torch.where(own, sub, torch.full_like(sub, -1))


@torch.no_grad()
def shard_update(
    center: CenterLossBase,
    x: torch.Tensor,
    local: torch.Tensor,
    head: nn.Module,
    keep: torch.Tensor | None = None,
) -> None:
    """Move this rank's centers with the samples of its classes in the global batch
    (every rank calls it, also with none of its classes in the batch)."""
    mine = (local >= 0).nonzero().squeeze(1)
    center.apply_update(upcast(x.detach())[mine], local[mine], head, keep=keep)


@torch.no_grad()
def shard_stats(
    center: CenterLossBase, x: torch.Tensor, local: torch.Tensor, head: nn.Module
) -> dict[str, float]:
    """``center.stats`` of the global batch: the distances computed on the owner ranks and
    the center norms of every shard, gathered (at log steps only)."""
    if isinstance(center, NoCenterLoss) or x.shape[0] == 0:
        return {}
    mine = (local >= 0).nonzero().squeeze(1)
    d = center.distances(x[mine], local[mine], head)  # (n_r,)
    norms = center.center_norms(head)  # (C_r,)
    if center.class_range.sharded:
        d, _ = gather_batch(d.unsqueeze(1), mine)
        norms, _ = gather_batch(norms.unsqueeze(1), norms.new_zeros(norms.shape, dtype=torch.long))
        d, norms = d.squeeze(1), norms.squeeze(1)
    return distance_stats(d, norms, center.config)
