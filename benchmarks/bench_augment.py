"""What ``--augment`` costs the training loader: images/s with none, light and strong.

    .venv/bin/python benchmarks/bench_augment.py [--images 4000] [--workers 2] [--batch 256]

Same input as ``bench_pack.py`` (LFW originals centre-cropped to 112x96 PNGs, packed with
``run_pack``, uncompressed shards). The loaders are the training one (``ShardDataset``,
random flip, normalisation) with ``transform`` = nothing, the ``light`` preset and the
``strong`` preset (``facecl.pack.augment``), run interleaved twice so background load hits
all alike; the best of the two is kept. Prints a markdown table with the ratio to none.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pack import build_aligned, loader_rate  # noqa: E402
from facecl.pack.config import PackConfig  # noqa: E402
from facecl.pack.dataset import ShardDataset  # noqa: E402
from facecl.pack.stage import run_pack  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facecl_bench")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    aligned = build_aligned(args.cache, args.images)
    pack = args.cache / f"pack_{args.images}_none"
    if not (pack / "manifest.json").is_file():
        run_pack([aligned], pack, PackConfig(shard_size=2000, val_fraction=0.0))
    settings = {"none": None, "light": ["light"], "strong": ["strong"]}
    best: dict[str, float] = {}
    for _ in range(2):
        for name, transform in settings.items():
            ds = ShardDataset(pack, split="all", flip=True, transform=transform)
            rate = loader_rate(ds, args.batch, args.workers, args.epochs)
            best[name] = max(best.get(name, 0.0), rate)
    n = len(ShardDataset(pack, split="all"))
    print(f"{n} images, load average {os.getloadavg()[0]:.1f}")
    print(f"| loader, batch {args.batch}, flip, {args.workers} workers | images/s | vs none |")
    print("|---|---:|---:|")
    for name, rate in best.items():
        print(f"| augment {name} | {rate:,.0f} | {rate / best['none']:.2f}x |")


if __name__ == "__main__":
    main()
