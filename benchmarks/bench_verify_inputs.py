"""Benchmark what ``--verify-inputs`` costs a stage's up-to-date check on a real tree, side by
side in one run: the default tree hash (names, sizes, mtimes: ``tree_listing_sha256``)
against the content hash (every file's bytes: ``tree_content_sha256``), interleaved repeats.

Input: the LFW originals (../shared/data/lfw, 13,233 JPEGs, 93 MiB).

    .venv/bin/python benchmarks/bench_verify_inputs.py [--root DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pack import LFW  # noqa: E402
from facecl.artifacts import tree_content_sha256, tree_listing_sha256  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=LFW)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not args.root.is_dir():
        sys.exit(f"no tree at {args.root} (see ../shared/data/SOURCES.md)")
    files = [p for p in args.root.rglob("*") if p.is_file()]
    mib = sum(p.stat().st_size for p in files) / 2**20
    tree_content_sha256(args.root)  # warm the page cache: both rows read a cached tree
    rows = {"listing (size + mtime)": tree_listing_sha256, "content (sha256)": tree_content_sha256}
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn(args.root)
            times[name].append(time.perf_counter() - t0)
    print(f"{len(files)} files, {mib:.0f} MiB under {args.root}")
    base = min(times["listing (size + mtime)"])
    for name, ts in times.items():
        print(f"{name:24s} best {min(ts):.2f} s  all {' '.join(f'{t:.2f}' for t in ts)}  "
              f"x{min(ts) / base:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
