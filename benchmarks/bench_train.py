"""Benchmark `facecl train`: throughput (images/s) of sphere20 at 112x96 and the share of the
step time spent waiting for the loader, side by side in one run:

  * ``memory``  : the same images from an in-memory tensor (no loader cost): the compute bound
  * ``hdf5 w=0``: the pack's ShardDataset read in the training process
  * ``hdf5 w=N``: the same with N DataLoader worker processes (one row per ``--workers`` N)

Against the FLOP bound: a training step costs about 3 forward passes (forward, and a
backward of twice its FLOPs), so images/s <= peak / (3 x forward GFLOP), with the peak the
best fp32 matmul on the same threads (``benchmarks.common.peak_gflops``).

The pack is synthetic (class patterns + noise, written with the pack stage's shard writer):
pixel content does not change the cost. One untimed run comes first, and the first
``--warmup`` steps of each timed run are not timed.

    .venv/bin/python benchmarks/bench_train.py [--arch sphere20] [--batch 16] [--steps 6]
        [--warmup 2] [--workers 2 8] [--threads 0] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import forward_gflop, peak_gflops, record  # noqa: E402
from facecl.models import create_backbone  # noqa: E402
from facecl.pack.dataset import ShardDataset  # noqa: E402
from facecl.train.config import TrainConfig  # noqa: E402
from facecl.train.loop import read_metrics, resolve_device, train  # noqa: E402
from tests.train.helpers import make_pack  # noqa: E402


class InMemory(torch.utils.data.Dataset):
    """Every image of a pack as one float tensor, served by ``get_batch`` (no loader)."""

    def __init__(self, ds: ShardDataset):
        items = [ds[i] for i in range(len(ds))]
        self.images = torch.stack([x for x, _ in items])  # (N, 3, H, W)
        self.labels_t = torch.tensor([y for _, y in items])
        self.labels = self.labels_t.numpy()
        self.num_classes, self.image_size = ds.num_classes, ds.image_size

    def __len__(self) -> int:
        return len(self.labels)

    def get_batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(idx)
        return self.images[i], self.labels_t[i]


def measure(cfg: TrainConfig, dataset, work: Path, warmup: int) -> tuple[float, float, float]:
    train(cfg, dataset, work)
    recs = read_metrics(work / "metrics.jsonl")[warmup:]  # one record per step
    ips = float(np.mean([r["images_per_s"] for r in recs]))
    wait = float(np.mean([r["loader_wait_share"] for r in recs]))
    step_s = cfg.batch_size / ips
    return ips, wait, step_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sphere20")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[2])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp_path = Path(tmp)
        pack = make_pack(tmp_path, classes=32, per_class=8, size=(112, 96), shard_size=64)
        base = TrainConfig(
            arch=args.arch,
            loss="cl",
            batch_size=args.batch,
            steps=args.warmup + args.steps,
            log_every=1,
            checkpoint_every=10**6,
            device=args.device,
            threads=args.threads,
        )
        runs = [
            ("memory (no loader)", InMemory(ShardDataset(pack)), 0),
            ("hdf5, workers=0", ShardDataset(pack), 0),
            *[(f"hdf5, workers={w}", ShardDataset(pack), w) for w in args.workers if w],
        ]
        # The first training run of a process is slower for longer than a few steps
        # (allocator, oneDNN primitive caches): one untimed run first.
        warm = TrainConfig(**{**base.__dict__, "workers": 0, "steps": 2 * args.warmup + 2})
        train(warm, runs[0][1], tmp_path / "warm-up")
        rows = []
        for name, ds, workers in runs:
            cfg = TrainConfig(**{**base.__dict__, "workers": workers})
            ips, wait, step_s = measure(cfg, ds, tmp_path / name.replace(" ", "_"), args.warmup)
            rows.append((name, ips, wait, step_s))
    ref = rows[0][1]
    threads = torch.get_num_threads()
    step_gflop = 3 * forward_gflop(create_backbone(args.arch), (3, 112, 96))
    peak = peak_gflops(threads) if device.type == "cpu" else float("nan")
    dev = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"\n{args.arch} at 112x96, loss cl, batch {args.batch}, {args.steps} timed steps "
        f"after {args.warmup} warm-up, device {device} ({dev}), torch threads {threads}; "
        f"~{step_gflop:.1f} GFLOP per image per step (3 x forward), measured fp32 peak "
        f"{peak:.0f} GFLOP/s = a bound of {peak / step_gflop:.1f} images/s\n"
    )
    print("| data path | images/s | of FLOP bound | s/step | loader wait share | vs in-memory |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ips, wait, step_s in rows:
        print(
            f"| {name} | {ips:.2f} | {100 * ips * step_gflop / peak:.0f}% | {step_s:.2f} | "
            f"{100 * wait:.1f}% | {ips / ref:.2f}x |"
        )
    print("\n(put this table under `## train` in docs/benchmarks.md)")
    record(
        "train",
        {
            "command": "benchmarks/bench_train.py " + " ".join(sys.argv[1:]),
            "arch": args.arch,
            "batch": args.batch,
            "threads": threads,
            "device": str(device),
            "gflop_per_image_step": round(step_gflop, 2),
            "peak_gflop_per_s": round(peak, 1),
            "rows": {
                name: {
                    "images_per_s": round(ips, 2),
                    "flop_bound_share": round(ips * step_gflop / peak, 3),
                    "loader_wait_share": round(wait, 4),
                }
                for name, ips, wait, _ in rows
            },
        },
    )


if __name__ == "__main__":
    main()
