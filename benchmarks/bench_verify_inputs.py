"""Benchmark what a stage's up-to-date check costs on a real tree, side by side in one run:
the tree hash (content hashes behind the stat cache: ``tree_sha256``) with a warm cache and
with a cold one (the first run, or after a copy or re-mount gave the files new mtimes), the
content hash that ``--verify-inputs`` reads (every byte: ``tree_content_sha256``), and the
names + sizes + mtimes listing that facecl hashed before the stat cache (the floor: one stat
per file), interleaved repeats.

Input: the LFW originals (../shared/data/lfw, 13,233 JPEGs, 93 MiB).

    .venv/bin/python benchmarks/bench_verify_inputs.py [--root DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pack import LFW  # noqa: E402
from facecl.artifacts import _tree_hash, tree_content_sha256, tree_sha256  # noqa: E402
from facecl.hashcache import CACHE_ENV  # noqa: E402


def _listing(root: Path) -> str:
    def size_mtime(p: Path) -> bytes:
        st = p.stat()
        return b"%d\t%d" % (st.st_size, st.st_mtime_ns)

    return _tree_hash(root, size_mtime)


def _cold(root: Path) -> str:
    with tempfile.TemporaryDirectory() as d:
        os.environ[CACHE_ENV] = d
        return tree_sha256(root)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=LFW)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not args.root.is_dir():
        sys.exit(f"no tree at {args.root} (see ../shared/data/SOURCES.md)")
    files = [p for p in args.root.rglob("*") if p.is_file()]
    mib = sum(p.stat().st_size for p in files) / 2**20
    warm_dir = tempfile.mkdtemp()
    os.environ[CACHE_ENV] = warm_dir
    tree_sha256(args.root)  # warm the page cache and the stat cache
    rows: dict[str, Callable[[Path], str]] = {
        "names, sizes, mtimes (old)": _listing,
        "tree hash, warm cache": tree_sha256,
        "tree hash, cold cache": _cold,
        "--verify-inputs (bytes)": tree_content_sha256,
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, fn in rows.items():
            os.environ[CACHE_ENV] = warm_dir
            t0 = time.perf_counter()
            fn(args.root)
            times[name].append(time.perf_counter() - t0)
    print(f"{len(files)} files, {mib:.0f} MiB under {args.root}")
    base = min(times["names, sizes, mtimes (old)"])
    for name, ts in times.items():
        print(f"{name:28s} best {min(ts):.2f} s  all {' '.join(f'{t:.2f}' for t in ts)}  "
              f"x{min(ts) / base:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
