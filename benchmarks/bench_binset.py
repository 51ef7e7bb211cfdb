"""Embed and verify an insightface-style 12,000-image ``.bin`` made from full LFW.

    .venv/bin/python benchmarks/bench_binset.py [--arch sphere20] [--pairs N] [--batch 64]

Writes ``lfw.bin`` with facecl's own writer (:func:`facecl.embed.binset.write_bin`): the
6,000 pairs of LFW View 2 ``pairs.txt`` in file order, both images of each pair, as
insightface's ``lfw.bin`` holds them (12,000 images). The images are the central 112x112
window of the 150 px LFW originals re-encoded as JPEG quality 95: the faces are *not*
ArcFace-aligned (aligning 7,700 photos with MTCNN is not what is measured here), and the
checkpoint has random weights, so the accuracy is not a face-recognition result; the cost
does not depend on either. Then times, each as its own ``facecl`` subprocess (start-up
included): ``facecl embed MODEL lfw.bin -o E`` (a 112x96 model: columns 8..104 of each
crop) and ``facecl verify E --protocol bin -o R``. Also times the safe reader alone on the
file (opcode walk, no pickle.load) next to ``pickle.load`` of the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LFW = Path(os.environ.get("FACECL_SHARED", ROOT.parent / "shared")) / "data" / "lfw"


def lfw_pairs(limit: int) -> tuple[list[Path], list[bool]]:
    """The image files of ``limit`` pairs of pairs.txt (2 per pair; every k-th pair in file
    order when fewer than all, so both kinds are in), and issame."""
    from facecl.verify.protocols import read_lfw_pairs

    pl = read_lfw_pairs(LFW / "pairs.txt")
    root = LFW / "lfw_original_150px"
    files, same = [], []
    step = max(1, len(pl) // limit)
    for a, b, s in list(zip(pl.a, pl.b, pl.same, strict=True))[::step][:limit]:
        files += [root / f"{k}.jpg" for k in (a, b)]
        same.append(bool(s))
    return files, same


def center_crops(files: list[Path]) -> list[bytes]:
    """JPEG (q95) bytes of the central 112x112 window of each photo (encoded once each)."""
    import cv2

    cache: dict[Path, bytes] = {}
    out = []
    for f in files:
        if f not in cache:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise SystemExit(f"cannot read {f}")
            h, w = img.shape[:2]
            top, left = (h - 112) // 2, (w - 112) // 2
            ok, buf = cv2.imencode(
                ".jpg", img[top : top + 112, left : left + 112], [cv2.IMWRITE_JPEG_QUALITY, 95]
            )
            cache[f] = buf.tobytes()
        out.append(cache[f])
    return out


def make_checkpoint(arch: str, path: Path) -> None:
    from facecl.models import create_backbone
    from facecl.train.checkpoint import save_checkpoint

    net = create_backbone(arch)
    save_checkpoint(
        path,
        {
            "arch": arch,
            "arch_kwargs": {},
            "feature_dim": int(net.feature_dim),
            "input_size": list(net.input_size),
            "config": {},
            "model": net.state_dict(),
        },
    )


def timed(cmd: list[str]) -> tuple[float, dict]:
    """Wall seconds of a facecl subprocess and its --json output."""
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return dt, json.loads(r.stdout)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="sphere20")
    ap.add_argument("--pairs", type=int, default=6000, help="pairs of pairs.txt (6000 = all)")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    if not (LFW / "pairs.txt").is_file():
        raise SystemExit(f"needs full LFW at {LFW} (set FACECL_SHARED)")
    from facecl.embed.binset import read_bin, write_bin

    tmp = Path(tempfile.mkdtemp(prefix="bench_binset_"))
    files, same = lfw_pairs(args.pairs)
    t = time.perf_counter()
    binf = write_bin(tmp / "lfw.bin", center_crops(files), same)
    build_s = time.perf_counter() - t
    size_mb = binf.stat().st_size / 2**20

    def load_pickle() -> None:
        with open(binf, "rb") as f:
            pickle.load(f)

    safe_s = best_of(lambda: read_bin(binf))
    pickle_s = best_of(load_pickle)
    make_checkpoint(args.arch, tmp / "model.pt")
    facecl = [sys.executable, "-m", "facecl"]
    emb_s, emb = timed(
        [*facecl, "embed", str(tmp / "model.pt"), str(binf), "-o", str(tmp / "E"),
         "--batch-size", str(args.batch), "--json"]
    )  # fmt: skip
    ver_s, ver = timed(
        [*facecl, "verify", str(tmp / "E"), "--protocol", "bin", "-o", str(tmp / "R"), "--json"]
    )
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    manifest = json.loads((tmp / "E" / "manifest.json").read_text())
    n = len(files)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"set: {n} images, {len(same)} pairs, {size_mb:.1f} MiB, built in {build_s:.1f} s")
    print(f"fit: {manifest['extra']['bin_fit']}\n")
    print(f"| {args.arch}, {n}-image .bin | wall time | note |")
    print("|---|---:|---|")
    rows = [
        ("safe reader `read_bin` (opcode walk)", f"{safe_s:.3f} s",
         f"`pickle.load`: {pickle_s:.3f} s ({safe_s / pickle_s:.1f}x)"),
        ("`facecl embed MODEL lfw.bin`", f"{emb_s:.1f} s",
         f"{n / emb_s:.1f} img/s end to end; {emb['images_per_s']:.1f} img/s embedding; "
         f"{emb['ok']}/{emb['items']} ok"),
        ("`facecl verify E --protocol bin`", f"{ver_s:.2f} s",
         f"accuracy {ver['summary']['accuracy']:.4f} (random weights)"),
    ]  # fmt: skip
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\npeak RSS of the facecl subprocesses: {rss:.2f} GiB")
    print(f"(files under {tmp})")


if __name__ == "__main__":
    main()
