"""Which samples each step trains on: a pure function of ``(seed, step)``.

The data order is a seeded permutation per epoch (``uniform``) or seeded draws with
replacement, every class equally often in expectation (``balanced``); the horizontal flips
are drawn per step. A run resumed at step s therefore sees exactly the batches an
uninterrupted run sees from step s. Under DDP every rank computes the same global batch
order and takes its contiguous slice, so N processes see what one process sees with the
global batch (the order ``gather_batch`` assumes when it rebuilds the global batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from facecl.errors import ConfigError, InputError

_TAG_ORDER, _TAG_FLIP = 1, 2


def _generator(seed: int, tag: int, k: int) -> torch.Generator:
    mixed = (seed * 1_000_003 + tag * 7_919 + k * 104_729) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def flip_mask(seed: int, step: int, global_batch: int) -> torch.Tensor:
    """Which samples of the global batch of ``step`` are flipped (p = 0.5): (GB,) bool."""
    return torch.rand(global_batch, generator=_generator(seed, _TAG_FLIP, step)) < 0.5


def balanced_weights(labels: Any, num_classes: int) -> np.ndarray:
    """Per-sample draw weights 1 / count(class) (N,): every class is drawn equally often in
    expectation, whatever its size."""
    y = np.asarray(labels)
    counts = np.bincount(y, minlength=num_classes)
    return 1.0 / counts[y]


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
            raise InputError("the training set is empty", "check the pack and --split")
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

    @property
    def rank_slice(self) -> slice:
        """This rank's positions in the global batch (e.g. for the flip mask)."""
        return slice(self.rank * self.local, (self.rank + 1) * self.local)

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
            images, labels = dataset.get_batch(idx)
            # pinned (when copying to CUDA): the step's non_blocking copy then never blocks
            yield (images.pin_memory(), labels.pin_memory()) if pin else (images, labels)
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
