"""bfloat16 autocast against float32 on a trained model: vectors, LFW pair scores, accuracy.

    .venv/bin/python benchmarks/bench_bf16_parity.py --model RUN --aligned ALIGN_OUT

Embeds every image of LFW View 2 (``--pairs``, default ../shared/data/lfw/pairs.txt) from an
align artifact (``facecl align`` of lfw_original_150px) with the torch backend twice, batch
by batch in turn: ``--precision float32`` and ``--precision bfloat16`` (channels_last both,
concat flip fusion), and reports the per-image cosine between the two vectors (min, mean,
quantiles), the pair scores' largest change, the 10-fold LFW accuracy both ways and how many
test decisions differ, and the images/s of both. Pairs whose image has no crop are counted
and left out of both sides alike. Nothing is asserted: the figures go to docs/benchmarks.md
and, under ``make bench``, to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, record  # noqa: E402

PAIRS = ROOT.parent / "shared" / "data" / "lfw" / "pairs.txt"


def crops_of_pairs(aligned: Path, pairs) -> tuple[list[str], list[Path], int]:
    """The distinct pair images with an ``ok`` crop in ``aligned`` (keys, crop paths) and
    the number of pairs left out for a missing crop."""
    from facecl.align.artifact import read_faces
    from facecl.verify.protocols import key_from_filename

    crop = {
        key_from_filename(Path(r.source).name): aligned / r.output
        for r in read_faces(aligned)
        if r.status == "ok" and r.face_index == 0
    }
    keys = sorted({k for k in (*pairs.a, *pairs.b) if k in crop})
    dropped = sum(a not in crop or b not in crop for a, b in zip(pairs.a, pairs.b, strict=True))
    return keys, [crop[k] for k in keys], dropped


def load(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def embed_both(backends: dict, images: np.ndarray, batch: int) -> tuple[dict, dict]:
    """Vectors and seconds of each backend, batches interleaved (same machine load)."""
    for b in backends.values():
        b.embed(images[:batch])  # warm-up
    out: dict[str, list[np.ndarray]] = {k: [] for k in backends}
    secs = dict.fromkeys(backends, 0.0)
    for s in range(0, len(images), batch):
        for k, b in backends.items():
            t = time.perf_counter()
            out[k].append(b.embed(images[s : s + batch]))
            secs[k] += time.perf_counter() - t
    return {k: np.concatenate(v) for k, v in out.items()}, secs


def pair_scores(vec: np.ndarray, index: dict[str, int], pairs, keep: np.ndarray) -> np.ndarray:
    from facecl.embed.export import cosine_rows

    a = vec[[index[k] for k, ok in zip(pairs.a, keep, strict=True) if ok]]
    b = vec[[index[k] for k, ok in zip(pairs.b, keep, strict=True) if ok]]
    return cosine_rows(a, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="train run directory or .pt")
    ap.add_argument("--aligned", type=Path, required=True, help="align artifact of LFW")
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--folds", type=int, default=10, help="use the first K of the 10 sets")
    args = ap.parse_args()
    if not args.pairs.is_file() or not args.aligned.is_dir():
        print(f"skipped: needs {args.pairs} and an align artifact at {args.aligned}")
        return

    import torch

    from facecl.embed.backends import TorchBackend, resolve_model
    from facecl.embed.export import cosine_rows
    from facecl.verify.metrics import kfold_accuracy
    from facecl.verify.protocols import read_lfw_pairs

    torch.set_num_threads(args.threads)
    pairs = read_lfw_pairs(args.pairs)
    sel = np.nonzero(pairs.fold < args.folds)[0]
    pairs = dataclasses.replace(
        pairs,
        a=[pairs.a[i] for i in sel],
        b=[pairs.b[i] for i in sel],
        same=pairs.same[sel],
        fold=pairs.fold[sel],
    )
    keys, paths, dropped = crops_of_pairs(args.aligned, pairs)
    index = {k: i for i, k in enumerate(keys)}
    keep = np.array([a in index and b in index for a, b in zip(pairs.a, pairs.b, strict=True)])
    model = resolve_model(args.model)
    backends = {
        p: TorchBackend(model, "concat", False, "cpu", precision=p) for p in ("float32", "bfloat16")
    }
    vec, secs = embed_both(backends, load(paths), args.batch)
    cos = cosine_rows(vec["float32"], vec["bfloat16"])
    same, fold = pairs.same[keep], pairs.fold[keep]
    scores = {k: pair_scores(v, index, pairs, keep) for k, v in vec.items()}
    acc = {k: kfold_accuracy(s, same, fold) for k, s in scores.items()}
    flips = 0
    for j, f in enumerate(np.unique(fold)):  # test decisions at each side's own threshold
        t = fold == f
        d32 = scores["float32"][t] >= acc["float32"].threshold[j]
        d16 = scores["bfloat16"][t] >= acc["bfloat16"].threshold[j]
        flips += int((d32 != d16).sum())
    fig = {
        "model": str(model.path),
        "images": len(keys),
        "pairs_used": int(keep.sum()),
        "pairs_without_crop": int(dropped),
        "cosine_fp32_bf16": {
            "min": float(cos.min()),
            "mean": float(cos.mean()),
            "p01": float(np.percentile(cos, 1)),
        },
        "max_pair_score_change": float(np.abs(scores["float32"] - scores["bfloat16"]).max()),
        "accuracy": {k: [round(a.mean, 5), round(a.std, 5)] for k, a in acc.items()},
        "test_decisions_differing": flips,
        "images_per_s": {k: round(len(keys) / s, 2) for k, s in secs.items()},
        "threads": args.threads,
    }
    print(
        f"\n{model.path}: {len(keys)} LFW images of {int(keep.sum())} View 2 pairs "
        f"({dropped} pairs without a crop; {args.folds} of the 10 sets), batch {args.batch}, "
        f"{args.threads} threads, load average {machine()['load_average_1m']}\n"
    )
    print("| | float32 | bfloat16 autocast |")
    print("|---|---:|---:|")
    print(f"| images/s (flip + concat) | {fig['images_per_s']['float32']:.1f} | "
          f"{fig['images_per_s']['bfloat16']:.1f} |")  # fmt: skip
    a32, a16 = acc["float32"], acc["bfloat16"]
    print(f"| LFW 10-fold accuracy | {a32.mean:.4f} +- {a32.std:.4f} | "
          f"{a16.mean:.4f} +- {a16.std:.4f} |")  # fmt: skip
    print(f"| cosine(float32, bfloat16) per image: min / 1st pct / mean | | "
          f"{cos.min():.6f} / {np.percentile(cos, 1):.6f} / {cos.mean():.6f} |")  # fmt: skip
    print(f"| largest pair-score change | | {fig['max_pair_score_change']:.2e} |")
    print(f"| test decisions that differ (of {int(keep.sum())}) | | {flips} |")
    record(
        "bf16_parity",
        {"command": "benchmarks/bench_bf16_parity.py " + " ".join(sys.argv[1:]), **fig},
    )


if __name__ == "__main__":
    main()
