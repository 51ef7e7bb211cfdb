"""Benchmark `facecl pack` of a RecordIO set: images/s next to the bare JPEG-decode rate of the
same records (the bound), and peak RSS at 100k+ records.

Input: a synthetic insightface-layout RecordIO set (record 0 = identity ranges, faces, then
identity records) written with the test writer (``tests/pack/recordio_writer.py``), its faces
the 176 real 112x112 JPEGs (mxnet-written, quality 95) of the lfw_mini fixture, cycled;
``--per-id`` faces per identity.

The bound: every face's JPEG decoded with ``cv2.imdecode`` from bytes already in memory, on
``--threads`` threads (the same decode the pack does, without reading, checking or writing).
The pack runs as ``facecl pack DIR -o OUT`` in a subprocess (its own peak RSS), end to end:
index and header scan, decode on 2 threads, HDF5 shard writes, sha256 of every shard,
classes.json, histogram, manifest.

    .venv/bin/python benchmarks/bench_recordio.py [--records 100000] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import record  # noqa: E402
from facecl.pack.recordio import iter_records, unpack  # noqa: E402
from tests.pack.recordio_writer import insightface_layout, write_recordio  # noqa: E402

FIXTURE = ROOT / "tests" / "data" / "insightface" / "lfw_mini_rec"


def fixture_jpegs() -> list[bytes]:
    """The 176 face JPEGs of the fixture (records 1..176)."""
    out = []
    for _, data in iter_records(FIXTURE):
        header, payload = unpack(data)
        if header.flag == 0:
            out.append(payload)
    return out


def build(folder: Path, n: int, per_id: int) -> list[bytes]:
    """A RecordIO set of ``n`` faces; returns their JPEGs (in record order)."""
    jpegs = fixture_jpegs()
    faces = [(i // per_id, jpegs[i % len(jpegs)]) for i in range(n)]
    classes = (n + per_id - 1) // per_id
    recs = insightface_layout(faces)
    write_recordio(folder, recs, f"{classes},112,112")
    return [j for _, j in faces]


def decode_rate(jpegs: list[bytes], threads: int) -> tuple[float, float]:
    """Bare decode over ``jpegs`` on ``threads`` threads: (images/s, CPU us per image)."""

    def run(chunk: list[bytes]) -> int:
        for j in chunk:
            cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
        return len(chunk)

    chunks = [jpegs[i : i + 256] for i in range(0, len(jpegs), 256)]
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(run, chunks))
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6


CHILD = """
import atexit, os, sys
def peak():  # VmHWM: this process's peak RSS (ru_maxrss would count the forking parent's)
    kib = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    open(os.environ["FACECL_BENCH_RSS"], "w").write(kib)
atexit.register(peak)
from facecl.cli import app
app(sys.argv[1:], prog_name="facecl")
"""


def pack_run(folder: Path, out: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of ``facecl pack folder -o out`` in a subprocess."""
    shutil.rmtree(out, ignore_errors=True)
    rss_file = out.parent / "rss.txt"
    cmd = [sys.executable, "-c", CHILD, "pack", str(folder), "-o", str(out), "--force"]
    env = {**os.environ, "FACECL_BENCH_RSS": str(rss_file)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, int(rss_file.read_text()) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--per-id", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "facecl_bench_rec")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic set and the pack")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    folder, out = args.dir / f"rec_{args.records}", args.dir / f"pack_{args.records}"
    t0 = time.perf_counter()
    jpegs = build(folder, args.records, args.per_id)
    rec_mib = (folder / "train.rec").stat().st_size / 2**20
    print(
        f"synthetic set: {args.records} faces, {rec_mib:.0f} MiB ({time.perf_counter() - t0:.1f} s)"
    )
    small = args.dir / "rec_small"
    build(small, 1000, args.per_id)  # for the fixed cost (start-up, histogram, manifest)
    # The box may be shared: interleave bound and pack, and keep the best of each.
    best: dict[str, tuple[float, float]] = {}
    walls, rss = [], 0.0
    try:
        for _ in range(args.repeat):
            for threads in (1, args.threads):
                rate, cpu = decode_rate(jpegs, threads)
                key = f"bare decode, cv2.imdecode, {threads} thread(s)"
                best[key] = max(best.get(key, (0.0, 0.0)), (rate, cpu))
            wall, cpu_s, run_rss = pack_run(folder, out)
            rss = max(rss, run_rss)
            key = "`facecl pack DIR -o OUT`, end to end"
            best[key] = max(
                best.get(key, (0.0, 0.0)), (args.records / wall, cpu_s / args.records * 1e6)
            )
            walls.append((wall, pack_run(small, args.dir / "pack_small")[0]))
        h5 = sum(p.stat().st_size for p in out.rglob("*.h5")) / 2**20
    finally:
        if not args.keep:
            for d in (folder, out, small, args.dir / "pack_small"):
                shutil.rmtree(d, ignore_errors=True)
    big, fixed = min(walls)
    best["pack, marginal: (N - 1000) / (wall(N) - wall(1000 records))"] = (
        (args.records - 1000) / (big - fixed),
        float("nan"),
    )
    bound = best[f"bare decode, cv2.imdecode, {args.threads} thread(s)"]
    print(f"\n{args.records:,} records, 112x112 JPEG q95, {os.cpu_count()} cores")
    print(f"best of {args.repeat}; pack of 1000 records: {fixed:.1f} s\n")
    print("| measurement | images/s | CPU us/image | bound / this (wall) |\n|---|---|---|---|")
    for key, (rate, cpu) in best.items():
        cpu_text = "-" if cpu != cpu else f"{cpu:.0f}"  # NaN: not measured
        print(f"| {key} | {rate:,.0f} | {cpu_text} | {bound[0] / rate:.2f}x |")
    print(f"\npack: peak RSS {rss:,.0f} MiB, {h5:,.0f} MiB of shards")
    record(
        "recordio",
        {
            "command": "benchmarks/bench_recordio.py " + " ".join(sys.argv[1:]),
            "records": args.records,
            "rows": {
                k: {"images_per_s": round(r), "cpu_us_per_image": round(c) if c == c else None}
                for k, (r, c) in best.items()
            },
            "bound_over_pack": round(bound[0] / best["`facecl pack DIR -o OUT`, end to end"][0], 3),
            "peak_rss_mib": round(rss),
        },
    )


if __name__ == "__main__":
    main()
