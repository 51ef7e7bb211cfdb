"""Benchmark `facecl pack`: shard write throughput, and the training loader against
torchvision ImageFolder + PNG decode of the same aligned crops, side by side in one run.

Input: LFW originals (../shared/data/lfw) turned into 112x96 PNG "aligned" crops by a plain
centre crop + resize (not MTCNN: aligning full LFW takes too long for a benchmark), written
once to a cache directory as a facecl align artifact.

    .venv/bin/python benchmarks/bench_pack.py [--images 4000] [--workers 2] [--batch 256]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from facecl.pack.config import PackConfig  # noqa: E402
from facecl.pack.dataset import ShardDataset  # noqa: E402
from facecl.pack.stage import run_pack  # noqa: E402
from tests.pack.helpers import make_align_artifact  # noqa: E402

LFW = ROOT.parent / "shared" / "data" / "lfw" / "lfw_original_150px"


def lfw_people(n_images: int) -> dict[str, list[Path]]:
    """Identities in name order until ``n_images`` images are collected."""
    people, total = {}, 0
    for d in sorted(LFW.iterdir()):
        files = sorted(d.glob("*.jpg"))
        people[d.name] = files
        total += len(files)
        if total >= n_images:
            break
    return people


def build_aligned(cache: Path, n_images: int) -> Path:
    art = cache / f"aligned_{n_images}"
    if (art / "manifest.json").is_file():
        return art
    shutil.rmtree(art, ignore_errors=True)
    shutil.rmtree(Path(str(art) + ".partial"), ignore_errors=True)
    return make_align_artifact(cache, lfw_people(n_images), name=art.name, root=LFW)


def loader_rate(dataset, batch: int, workers: int, epochs: int) -> float:
    """Images per second over ``epochs`` full passes (after one warm-up batch)."""
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=True
    )
    it = iter(loader)
    next(it)  # start the workers
    n, t0 = 0, time.perf_counter()
    for x, _ in it:  # x: (B, 3, 112, 96)
        n += x.shape[0]
    for _ in range(epochs - 1):
        for x, _ in loader:
            n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facecl_bench_pack")
    args = ap.parse_args()
    if not LFW.is_dir():
        sys.exit(f"needs LFW at {LFW}")
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    aligned = build_aligned(args.cache, args.images)
    n_png = sum(1 for _ in (aligned / "aligned").rglob("*.png"))
    print(f"aligned input: {n_png} PNG crops in {aligned} ({time.perf_counter() - t0:.1f} s)")

    rows = []
    packs = {}
    for comp in ("none", "lzf", "gzip"):
        out = args.cache / f"pack_{comp}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        res = run_pack([aligned], out, PackConfig(compression=comp, shard_size=2000), force=True)
        dt = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.rglob("*.h5")) / 2**20
        packs[comp] = out
        rows.append(
            f"| pack write, compression={comp} | {res.manifest.counts['written'] / dt:,.0f} img/s "
            f"| {size:.0f} MiB of shards |"
        )

    from torchvision import datasets, transforms

    png_ds = datasets.ImageFolder(
        str(aligned / "aligned"),
        transform=transforms.Compose(
            [
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),  # [0, 1]
                transforms.Normalize([127.5 / 255] * 3, [128 / 255] * 3),  # = (x - 127.5) / 128
            ]
        ),
    )
    rates = {}
    # Interleave the two loaders twice so background load hits both alike; keep the best.
    for _ in range(2):
        for name, ds in (
            ("ImageFolder + PNG decode", png_ds),
            ("ShardDataset (pack, none)", ShardDataset(packs["none"], split="all", flip=True)),
            ("ShardDataset (pack, lzf)", ShardDataset(packs["lzf"], split="all", flip=True)),
        ):
            r = loader_rate(ds, args.batch, args.workers, args.epochs)
            rates[name] = max(rates.get(name, 0.0), r)
    base = rates["ImageFolder + PNG decode"]
    for name, r in rates.items():
        rows.append(
            f"| loader: {name}, batch {args.batch}, flip, {args.workers} workers "
            f"| {r:,.0f} img/s | {r / base:.2f}x ImageFolder |"
        )
    print(f"\n{n_png} images, 112x96 RGB\n")
    print("| measurement | throughput | note |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
