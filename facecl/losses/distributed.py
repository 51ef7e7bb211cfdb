"""Make the center updates of N processes equal to one process on the global batch.

Every update rule of the family (ECCV Eq. 4, IJCV Eq. 7-8) is a function of per-class sums
and counts over the mini-batch. Instead of all-reducing dense (C, D) sum and (C,) count
tensors (C * D floats per step: 200 MB at C = 100k, D = 512), each process all-gathers the
(B, D) features and (B,) labels of the others (world * B * D floats) and computes the sums
itself. The result is the same sums, accumulated in the same order as a single process on
the concatenated batch (rank 0's samples first), so the centers agree to the last bit on CPU.

Under ``--shard-classes`` each rank holds one ``ClassRange`` of the classes
(``class_range`` is the one split); the center losses read their shard from it and sum
what spans every class (CIL's tau, ACL-gamma's sums) with ``sum_over_shards``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


def distributed_world() -> int:
    """World size when torch.distributed is initialised, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_batch(
    x: torch.Tensor, y: torch.Tensor, same_size: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather (x (B, D), y (B,)) from every rank, concatenated in rank order.

    Ranks may hold different batch sizes (padded for the collective, then trimmed), unless
    ``same_size`` says they hold the same (the train sampler's equal slices): then the sizes
    are not gathered (no ``.item()`` host sync). Returns the inputs unchanged when not
    distributed.
    """
    world = distributed_world()
    if world == 1:
        return x, y
    if same_size:
        xs = [torch.empty_like(x) for _ in range(world)]
        ys = [torch.empty_like(y) for _ in range(world)]
        dist.all_gather(xs, x.contiguous())
        dist.all_gather(ys, y.contiguous())
        return torch.cat(xs), torch.cat(ys)
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    most = max(counts)
    xp = x.new_zeros((most, *x.shape[1:]))
    xp[: x.shape[0]] = x
    yp = y.new_full((most,), -1)
    yp[: y.shape[0]] = y
    xs = [torch.empty_like(xp) for _ in range(world)]
    ys = [torch.empty_like(yp) for _ in range(world)]
    dist.all_gather(xs, xp.contiguous())
    dist.all_gather(ys, yp.contiguous())
    x_all = torch.cat([xi[:k] for xi, k in zip(xs, counts, strict=True)])  # (sum B, D)
    y_all = torch.cat([yi[:k] for yi, k in zip(ys, counts, strict=True)])  # (sum B,)
    return x_all, y_all


# --------------------------------------------------------------------------- class shards


@dataclass(frozen=True)
class ClassRange:
    """The classes ``[lo, hi)`` of ``num_classes`` that one rank holds (``--shard-classes``):
    its rows of the head weight (and bias) and of the center state. The full range
    ``(0, C, C)`` is an unsharded module."""

    lo: int
    hi: int
    num_classes: int

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi <= self.num_classes:
            raise ValueError(f"bad class range [{self.lo}, {self.hi}) of {self.num_classes}")

    @classmethod
    def full(cls, num_classes: int) -> ClassRange:
        return cls(0, int(num_classes), int(num_classes))

    @property
    def size(self) -> int:
        return self.hi - self.lo

    @property
    def sharded(self) -> bool:
        return self.size != self.num_classes

    def local_labels(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(own (N,) bool, local (N,) long): whether this range holds each label, and the
        label's row in the shard (``y - lo``; -1 where not held)."""
        own = (y >= self.lo) & (y < self.hi)
        return own, torch.where(own, y - self.lo, torch.full_like(y, -1))


def class_range(num_classes: int, rank: int, world: int) -> ClassRange:
    """The one split of ``num_classes`` over ``world`` ranks: contiguous ranges in rank
    order, sizes differing by at most one (the first ``C % world`` ranks hold one more)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world {world}")
    base, extra = divmod(int(num_classes), int(world))
    lo = rank * base + min(rank, extra)
    return ClassRange(lo, lo + base + (rank < extra), int(num_classes))


def sum_over_shards(t: torch.Tensor, shard: ClassRange) -> torch.Tensor:
    """``t`` summed over the ranks of a sharded module (all-reduce); ``t`` itself when the
    module holds every class."""
    if not shard.sharded:
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out
