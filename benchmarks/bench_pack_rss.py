"""Peak RSS of `facecl pack`'s planning at two sizes, and the slope in bytes per image.

Input: synthetic insightface-layout RecordIO sets (``bench_recordio.build``: the fixture's
176 real JPEGs cycled, ``--per-id`` faces per identity). Each size runs in a fresh
subprocess that imports facecl, notes its RSS, then reads the input (index + header scan)
and makes the plan (identities, labels, 5 % validation split, shard order): what pack holds
in memory for the whole run while the shards are written. Reported: the child's peak RSS
(VmHWM) and its growth over the post-import baseline; the slope between the two sizes is the
memory pack needs per image. ``--full`` also runs ``facecl pack DIR -o OUT`` end to end at
both sizes (its own peak RSS, via ``bench_recordio.pack_run``), and its slope.

    .venv/bin/python benchmarks/bench_pack_rss.py [--sizes 20000 100000] [--full]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_recordio import build, pack_run  # noqa: E402

CHILD = """
import json, sys
def kib(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0])
from pathlib import Path
from facecl.pack.config import PackConfig
from facecl.pack.inputs import RECORDIO, open_input
from facecl.pack.stage import make_plan
base = kib("VmRSS")
source = open_input(RECORDIO, [Path(sys.argv[1])])
plan = make_plan(source, PackConfig(val_fraction=0.05), [])
print(json.dumps({"base_kib": base, "peak_kib": kib("VmHWM"), "images": plan.n_images}))
"""


def plan_rss(folder: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[20_000, 100_000])
    ap.add_argument("--per-id", type=int, default=50)
    ap.add_argument("--full", action="store_true", help="also pack both sets end to end")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facecl_bench_rss")
    args = ap.parse_args()
    got = {}
    for n in args.sizes:
        folder = args.dir / f"rec_{n}"
        if not (folder / "train.idx").is_file():
            build(folder, n, args.per_id)
        got[n] = plan_rss(folder)
        r = got[n]
        grow = (r["peak_kib"] - r["base_kib"]) / 1024
        print(f"{n} images: plan peak RSS {r['peak_kib'] / 1024:.0f} MiB (+{grow:.0f} MiB)")
    small, big = args.sizes
    slope = (got[big]["peak_kib"] - got[small]["peak_kib"]) * 1024 / (big - small)
    print(f"slope: {slope:.0f} B per image")
    if not args.full:
        return
    full = {}
    for n in args.sizes:
        wall, _, full[n] = pack_run(args.dir / f"rec_{n}", args.dir / "pack")
        print(f"facecl pack {n} images end to end: peak RSS {full[n]:.0f} MiB, {wall:.0f} s")
    print(f"end-to-end slope: {(full[big] - full[small]) * 2**20 / (big - small):.0f} B per image")


if __name__ == "__main__":
    main()
