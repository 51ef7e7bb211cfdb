"""Benchmark of the align stage's overlap: crops warped and written serially on the main
thread (``--writers 0``) vs behind the detector in writer threads (``--writers N``).

    .venv/bin/python benchmarks/bench_align_overlap.py --rounds 3 --writers 2

The whole stage (``run_align``: listing, decoding, MTCNN, warping, PNG writing, faces.csv,
manifest) on tests/data/lfw_mini (176 LFW originals), each round a fresh output of each
mode, interleaved (serial, overlapped, overlapped, serial, ...) so load changes hit both alike. The
detector is loaded once and shared, as are the torch threads. Each pair of outputs is
checked to be the same bytes (faces.csv and every crop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, record  # noqa: E402

MINI = ROOT / "tests" / "data" / "lfw_mini" / "lfw_original_150px"


def _same_bytes(a: Path, b: Path) -> bool:
    from facecl.align.artifact import FACES_CSV
    from facecl.artifacts import sha256_file

    names = sorted(p.relative_to(a) for p in (a / "aligned").rglob("*.png"))
    if names != sorted(p.relative_to(b) for p in (b / "aligned").rglob("*.png")):
        return False
    return (a / FACES_CSV).read_bytes() == (b / FACES_CSV).read_bytes() and all(
        sha256_file(a / n) == sha256_file(b / n) for n in names
    )


def overlap_compare(
    device: str, rounds: int, writers: int, batch_size: int | None
) -> dict[str, Any]:
    """Both modes, ``rounds`` interleaved rounds on ``device``: img/s per round, medians,
    ratio, and whether every pair of outputs was the same bytes."""
    from facecl.align.config import AlignConfig, AlignRuntime
    from facecl.align.mtcnn import MTCNN
    from facecl.align.stage import run_align

    detector = MTCNN(device=device)
    modes = {"serial": 0, "overlapped": writers}
    speeds: dict[str, list[float]] = {m: [] for m in modes}
    same = True
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            outs = {}
            order = list(modes.items())[:: 1 if r % 2 == 0 else -1]  # who goes first alternates
            for mode, n in order:
                out = Path(tmp) / f"{mode}{r}"
                rt = AlignRuntime(device=device, batch_size=batch_size, writers=n)  # type: ignore[arg-type]
                t = time.perf_counter()
                s = run_align(AlignConfig(), MINI, out, runtime=rt, detector=detector)
                speeds[mode].append(s.counts["processed"] / (time.perf_counter() - t))
                outs[mode] = out
                print(f"round {r} {mode:10s} {speeds[mode][-1]:6.2f} img/s", file=sys.stderr)
            same = same and _same_bytes(outs["serial"], outs["overlapped"])
    med = {m: round(statistics.median(v), 2) for m, v in speeds.items()}
    return {
        "images": 176,
        "device": device,
        "rounds": rounds,
        "writers": writers,
        "batch_size": batch_size,
        "img_per_s": {m: [round(x, 2) for x in v] for m, v in speeds.items()},
        "median_img_per_s": med,
        "ratio_overlapped_over_serial": round(med["overlapped"] / med["serial"], 3),
        "same_bytes": same,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--writers", type=int, default=2, help="threads of the overlapped mode")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the detector")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    doc = overlap_compare(args.device, args.rounds, args.writers, args.batch_size)
    doc = {**doc, "torch_threads": args.threads, "machine": machine()}
    record("align_overlap", doc)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
