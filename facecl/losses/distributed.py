"""Make the center updates of N processes equal to one process on the global batch.

Every update rule of the family (ECCV Eq. 4, IJCV Eq. 7-8) is a function of per-class sums
and counts over the mini-batch. Instead of all-reducing dense (C, D) sum and (C,) count
tensors (C * D floats per step: 200 MB at C = 100k, D = 512), each process all-gathers the
(B, D) features and (B,) labels of the others (world * B * D floats) and computes the sums
itself. The result is the same sums, accumulated in the same order as a single process on
the concatenated batch (rank 0's samples first), so the centers agree to the last bit on CPU.
"""

from __future__ import annotations

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
