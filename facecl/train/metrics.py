"""``metrics.jsonl``: one JSON record per log step, averaged over a window of steps.

The loop adds every step's loss terms to a :class:`Window`; at a log step the window's means
(over its steps, and over the ranks under DDP: the global batch's loss as one process would
log it) become a record, and a new window starts. A checkpoint carries the partial window
(``Window.payload``), so a resumed run logs exactly what an uninterrupted run logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

Number = torch.Tensor | float


@dataclass
class Window:
    """The loss terms summed since the last record, and the time spent."""

    sums: dict[str, Number] = field(default_factory=dict)
    steps: int = 0
    wait: float = 0.0  # seconds waiting for the loader
    t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> Window:
        """The partial window a full checkpoint was written with (empty if none)."""
        return cls(dict(ckpt.get("metrics_window", {})), int(ckpt.get("metrics_window_steps", 0)))

    def add(self, terms: Mapping[str, Number], wait: float) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.wait += wait

    def means(self, world: int = 1, device: torch.device | None = None) -> dict[str, float]:
        return window_means(self.sums, self.steps, world, device)

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.t0, 1e-9)

    def payload(self) -> dict[str, Any]:
        """The checkpoint keys that restore this window."""
        return {
            "metrics_window": {k: torch.as_tensor(v).cpu() for k, v in self.sums.items()},
            "metrics_window_steps": self.steps,
        }


def window_means(
    window: dict[str, Number], steps: int, world: int, device: torch.device | None = None
) -> dict[str, float]:
    """Mean of each loss term over the log window (and over the ranks under DDP, so the
    record is the global batch's loss as one process would log it; the reduction runs on
    ``device``, the process group's)."""
    keys = sorted(window)
    vec = torch.stack([torch.as_tensor(window[k]).float().cpu() for k in keys]) / steps  # (K,)
    if world > 1:
        import torch.distributed as dist

        vec = vec.to(device or "cpu")
        dist.all_reduce(vec)
        vec = vec / world
    return dict(zip(keys, vec.tolist(), strict=True))


def append_record(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
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
