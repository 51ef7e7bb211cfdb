"""Benchmark what checking a pack on read costs the training loader, side by side in one run:

  * ``sha256 at open``: ``ShardDataset(verify=True)`` hashes every shard once when the
    dataset is built (what facecl does), against one epoch of the loader without it;
  * ``fletcher32 per chunk``: the alternative, HDF5's checksum filter on every image chunk,
    verified by HDF5 on each read (so the loader goes through HDF5's filter pipeline).

Input: LFW originals (../shared/data/lfw) as 112x96 centre crops (as bench_pack.py), packed
uncompressed (the default).

    .venv/bin/python benchmarks/bench_integrity.py [--images 4000] [--workers 2] [--batch 256]
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

import h5py  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_pack import LFW, build_aligned, loader_rate  # noqa: E402
from facecl.pack.config import PackConfig  # noqa: E402
from facecl.pack.dataset import ShardDataset  # noqa: E402
from facecl.pack.stage import run_pack  # noqa: E402


def with_fletcher32(src: Path, dst: Path) -> Path:
    """A copy of the pack whose image chunks carry HDF5 fletcher32 checksums (the manifest's
    sha256 entries dropped: HDF5 does the checking)."""
    import json

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    for shard in dst.rglob("*.h5"):
        tmp = shard.with_suffix(".f32")
        with h5py.File(shard, "r") as a, h5py.File(tmp, "w") as b:
            for k, v in a.attrs.items():
                b.attrs[k] = v
            im = a["images"]
            b.create_dataset("images", data=im[:], chunks=im.chunks, fletcher32=True)
            for name in ("labels", "paths", "sources"):
                a.copy(name, b)
        tmp.replace(shard)
    m = json.loads((dst / "manifest.json").read_text())
    m["extra"]["files"] = {k: v for k, v in m["extra"]["files"].items() if not k.endswith(".h5")}
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facecl_bench_pack")
    args = ap.parse_args()
    if not LFW.is_dir():
        sys.exit(f"needs LFW at {LFW}")
    torch.set_num_threads(1)
    aligned = build_aligned(args.cache, args.images)
    pack = args.cache / "pack_integrity"
    run_pack([aligned], pack, PackConfig(shard_size=2000), force=True)
    f32 = with_fletcher32(pack, args.cache / "pack_fletcher32")
    mib = sum(p.stat().st_size for p in pack.rglob("*.h5")) / 2**20

    best: dict[str, float] = {}
    for _ in range(2):  # interleaved, best of 2: background load hits all alike
        _, t_plain = timed(lambda: ShardDataset(pack, split="all", flip=True, verify=False))
        ds, t_verify = timed(lambda: ShardDataset(pack, split="all", flip=True))
        n = len(ds)
        rate = loader_rate(ds, args.batch, args.workers, 1)
        rate_f32 = loader_rate(
            ShardDataset(f32, split="all", flip=True), args.batch, args.workers, 1
        )
        for k, v in (
            ("open", t_plain),
            ("open+sha256", t_verify),
            ("epoch", n / rate),
            ("epoch_f32", n / rate_f32),
        ):
            best[k] = min(best.get(k, float("inf")), v)
    hash_s = best["open+sha256"] - best["open"]
    epoch = best["epoch"]
    print(f"\n{n} images, 112x96 RGB, {mib:.0f} MiB of uncompressed shards\n")
    print("| measurement | time | vs one loader epoch |\n|---|---|---|")
    print(
        f"| loader epoch, batch {args.batch}, flip, {args.workers} workers | {epoch:.2f} s | 1.00 |"
    )
    print(
        f"| sha256 of every shard at open (once per run) | {hash_s:.2f} s "
        f"({mib / max(hash_s, 1e-9):,.0f} MiB/s) | +{100 * hash_s / epoch:.1f} % of one epoch |"
    )
    print(
        f"| loader epoch with fletcher32 per chunk (every read) | {best['epoch_f32']:.2f} s "
        f"| +{100 * (best['epoch_f32'] / epoch - 1):.1f} % of every epoch |"
    )


if __name__ == "__main__":
    main()
