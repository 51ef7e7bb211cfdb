"""What the benchmark scripts share: the machine's measured peak, a net's forward FLOPs and
the one machine-readable results file (``benchmarks/results.json``, next to
docs/benchmarks.md) that ``make bench`` fills."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"
RESULTS_ENV = "FACECL_BENCH_RESULTS"
"""When set, the file each benchmark merges its section into (run_all.sh sets it)."""


def peak_gflops(threads: int, n: int = 2048, repeats: int = 20) -> float:
    """The machine's measured fp32 peak: the best GFLOP/s of an n x n matmul on ``threads``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    torch.set_num_threads(old)
    return 2 * n**3 / best / 1e9


def forward_gflop(net: Any, shape: tuple[int, ...]) -> float:
    """FLOPs (multiply + add = 2) of one forward pass of ``net`` on one input of ``shape``
    (C, H, W), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, *shape))
    return counter.get_total_flops() / 1e9


def machine() -> dict[str, Any]:
    """What a figure was measured on: CPU model, cores, load average at the time."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_1m": round(load[0], 2)}


def record(section: str, data: dict[str, Any]) -> Path | None:
    """Merge ``data`` (plus the machine) under ``section`` of the results file named by
    $FACECL_BENCH_RESULTS; nothing is written when it is unset (a run by hand)."""
    target = os.environ.get(RESULTS_ENV)
    if not target:
        return None
    path = Path(target)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[section] = {
        **data,
        "machine": machine(),
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
