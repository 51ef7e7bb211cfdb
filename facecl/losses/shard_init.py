"""A class shard's head and center loss, initialised as rows ``[lo, hi)`` of one process's.

One process draws the head weight (C, D) and the centers (C, D) from the seeded CPU
generator. A rank of ``--shard-classes`` must start from the same rows without ever
holding the full tensors: it draws the same stream in chunks (CPU ``uniform_`` takes one
number per element, so chunked draws equal one draw), keeps its rows and drops the
others, and leaves the generator where one process leaves it. The laws mirror the
modules' constructors (``nn.Linear``'s kaiming bound for the softmax head, Xavier for the
margin heads and caffe's filler for the centers); ``tests/losses/test_shard_init.py``
checks every row against the full modules. Gaussian centers (CPU ``normal_`` draws in
blocks) are drawn whole once and sliced.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from facecl.losses.center import CenterLoss, CenterLossBase
from facecl.losses.distributed import ClassRange
from facecl.losses.heads import MarginHead, SoftmaxHead

CHUNK = 1 << 20
"""Numbers drawn at a time while skipping other ranks' rows (4 MiB of float32)."""


def _skip(n: int) -> None:
    """Advance the CPU generator by ``n`` float32 uniforms."""
    buf = torch.empty(min(n, CHUNK))
    while n > 0:
        k = min(n, CHUNK)
        buf[:k].uniform_()
        n -= k


def uniform_rows(shard: ClassRange, row: tuple[int, ...], bound: float) -> torch.Tensor:
    """Rows ``[lo, hi)`` of ``torch.empty(C, *row).uniform_(-bound, bound)``, drawing the
    same stream (and leaving the generator as the full draw does)."""
    per = math.prod(row)
    _skip(shard.lo * per)
    out = torch.empty(shard.size, *row).uniform_(-bound, bound)
    _skip((shard.num_classes - shard.hi) * per)
    return out


def _kaiming_bound(fan_in: int) -> float:
    """``nn.Linear``'s weight bound: kaiming_uniform_ with a = sqrt(5)."""
    gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    return math.sqrt(3.0) * (gain / math.sqrt(fan_in))


def _xavier_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(3.0) * (1.0 * math.sqrt(2.0 / float(fan_in + fan_out)))


@torch.no_grad()
def init_head_rows(head: nn.Module, shard: ClassRange) -> None:
    """Draw the shard's rows of a head built with ``shard.size`` classes."""
    if isinstance(head, SoftmaxHead):
        dim = head.feature_dim
        head.fc.weight.copy_(uniform_rows(shard, (dim,), _kaiming_bound(dim)))
        if head.fc.bias is not None:
            head.fc.bias.copy_(uniform_rows(shard, (), 1 / math.sqrt(dim)))
    elif isinstance(head, MarginHead):
        bound = _xavier_bound(head.feature_dim, shard.num_classes)
        head.weight.copy_(uniform_rows(shard, (head.feature_dim,), bound))
    else:
        raise TypeError(f"no sharded initialisation for head {type(head).__name__}")


@torch.no_grad()
def init_center_rows(center: CenterLossBase, shard: ClassRange) -> None:
    """Draw the shard's rows of the centers (the other variants' state is not random)."""
    if not isinstance(center, CenterLoss):
        return
    dim = center.feature_dim
    kind = center.config.center_init
    if kind == "xavier":
        center.centers.copy_(uniform_rows(shard, (dim,), (3.0 / dim) ** 0.5))
    elif kind == "gaussian":
        full = torch.empty(shard.num_classes, dim)
        nn.init.normal_(full, 0.0, 0.01)
        center.centers.copy_(full[shard.lo : shard.hi])


def _unseeded(build: Any) -> Any:
    """``build()`` with the CPU generator put back as it was (its own draws are replaced)."""
    with torch.random.fork_rng(devices=[]):
        return build()


def shard_head(name: str, dim: int, shard: ClassRange, **options: Any) -> nn.Module:
    """The head of ``shard``'s classes, its rows as one process's head of all classes."""
    from facecl.losses.factory import create_head

    head = _unseeded(lambda: create_head(name, dim, shard.size, **options))
    init_head_rows(head, shard)
    head.class_range = shard
    return head


def shard_center_loss(
    name: str, dim: int, shard: ClassRange, config: Any, class_counts: Any = None
) -> CenterLossBase:
    """The center loss of ``shard``'s classes (CIL: its slice of the class counts)."""
    from facecl.losses.factory import create_center_loss

    counts = None
    if class_counts is not None:
        counts = torch.as_tensor(class_counts).reshape(-1)
        if counts.numel() == shard.num_classes:  # else create_center_loss says what is wrong
            counts = counts[shard.lo : shard.hi]
    center = _unseeded(
        lambda: create_center_loss(name, shard.size, dim, config=config, class_counts=counts)
    )
    init_center_rows(center, shard)
    center.class_range = shard
    return center
