"""Benchmark of `facecl align`: our MTCNN vs facenet-pytorch 2.6.0's, side by side.

    .venv/bin/python benchmarks/bench_align.py                 # throughput + agreement
    .venv/bin/python benchmarks/bench_align.py --full OUT      # detection rate, all of LFW
    .venv/bin/python benchmarks/bench_align.py --sheet OUT     # contact sheet from OUT

facenet-pytorch is never a facecl dependency: it lives in its own venv (``--facenet-python``,
default /tmp/fnp/bin/python), made with::

    python3 -m venv /tmp/fnp && /tmp/fnp/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/fnp/bin/pip install --no-deps facenet-pytorch==2.6.0 pillow requests tqdm
    /tmp/fnp/bin/pip install urllib3 idna certifi charset-normalizer   # for `import requests`

and runs in a subprocess driven over stdin, so the two detectors take turns on the same CPU
(batch by batch: ours, theirs, ours, theirs, ...) with the same thread count, the same
decoded images (both decode with Pillow) and the same batch size, and the same weights.
Timed: detection (boxes + landmarks) from decoded RGB arrays; decoding is excluded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "lfw_original_150px"


def lfw_sample(n: int) -> list[Path]:
    paths = sorted(LFW.rglob("*.jpg"))
    step = max(1, len(paths) // n)
    return paths[::step][:n]


def load_rgb(paths: list[Path]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def pick(boxes: np.ndarray, h: int, w: int) -> int:
    """The most central, biggest face (same rule for both detectors)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    c = (boxes[:, :2] + boxes[:, 2:]) / 2 - [(w - 1) / 2, (h - 1) / 2]
    return int(np.argmax(area - 2.0 * (c**2).sum(1)))


def mtcnn_throughput(
    images: list[np.ndarray], device: str, batch: int, rounds: int = 2
) -> dict[str, float]:
    """Our MTCNN's detection throughput (boxes + landmarks from decoded RGB) on ``device``:
    images/s over ``rounds`` passes after one untimed batch, and the share with a face."""
    import torch

    from facecl.align.mtcnn import MTCNN

    det = MTCNN(device=device)
    det.detect(images[:batch])  # warm-up (CUDA context, cuDNN autotune)
    found, t = 0, time.perf_counter()
    for _ in range(rounds):
        for s in range(0, len(images), batch):
            found += sum(len(d) > 0 for d in det.detect(images[s : s + batch]))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    return {
        "images_per_s": rounds * len(images) / seconds,
        "face_share": found / (rounds * len(images)),
    }


# --------------------------------------------------------------------------- facenet side


def facenet_worker(list_file: str, threads: int, batch: int, out: str) -> None:
    """Runs in the facenet-pytorch venv. 'run' on stdin -> one timed pass; 'flip' -> an
    untimed pass on mirrored images; 'quit' -> save landmarks to ``out`` (npz)."""
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(threads)
    paths = [Path(p) for p in Path(list_file).read_text().splitlines()]
    imgs = load_rgb(paths)
    mtcnn = MTCNN(device="cpu")
    mtcnn.detect(np.stack(imgs[:batch]), landmarks=True)  # warm-up

    def run(images):
        res = []
        for s in range(0, len(images), batch):
            boxes, _, points = mtcnn.detect(np.stack(images[s : s + batch]), landmarks=True)
            res += [
                (np.zeros((0, 4)), np.zeros((0, 5, 2))) if b is None else (b, p)
                for b, p in zip(boxes, points, strict=True)
            ]
        return res

    saved = {"plain": [None] * len(imgs)}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd.startswith("batch "):  # one timed batch: "batch <start>"
            s = int(cmd.split()[1])
            t = time.perf_counter()
            res = run(imgs[s : s + batch])
            el = time.perf_counter() - t
            saved["plain"][s : s + len(res)] = res
            print(json.dumps({"seconds": el}), flush=True)
        elif cmd == "flip":
            saved["flip"] = run([np.ascontiguousarray(i[:, ::-1]) for i in imgs])
            print("{}", flush=True)
        elif cmd == "quit":
            break
    arrays = {}
    for key, res in saved.items():
        for i, (b, p) in enumerate(res):
            arrays[f"{key}_b{i}"] = np.asarray(b, np.float64)
            arrays[f"{key}_p{i}"] = np.asarray(p, np.float64)
    np.savez(out, **arrays)


class Facenet:
    def __init__(self, python: str, list_file: Path, threads: int, batch: int, out: Path):
        self.out = out
        cmd = [python, __file__, "--facenet-worker", str(list_file)]
        cmd += ["--threads", str(threads), "--batch", str(batch), "--worker-out", str(out)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "facenet worker failed to start"

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def results(self, n: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait()
        z = np.load(self.out)
        return {
            k: [(z[f"{k}_b{i}"].reshape(-1, 4), z[f"{k}_p{i}"].reshape(-1, 5, 2)) for i in range(n)]
            for k in ("plain", "flip")
        }


# --------------------------------------------------------------------------- our side


def flip_bias(imgs, plain, flipped) -> float:
    """Mean x offset of landmarks vs those of the mirrored image mapped back (px)."""
    out = []
    for im, (b, p), (bf, pf) in zip(imgs, plain, flipped, strict=True):
        if len(b) == 0 or len(bf) == 0:
            continue
        h, w = im.shape[:2]
        a = p[pick(b, h, w)]
        f = pf[pick(bf, h, w)][[1, 0, 2, 4, 3]]
        out.append((a[:, 0] - (w - 1 - f[:, 0])).mean() / 2)
    return float(np.mean(out))


def compare(args) -> None:
    import torch

    from facecl.align.mtcnn import MTCNN

    torch.set_num_threads(args.threads)
    if not Path(args.facenet_python).exists() or not LFW.is_dir():
        print(
            f"skipped: needs {LFW} and the facenet-pytorch venv at {args.facenet_python} "
            "(see this script's docstring to create it)"
        )
        return
    paths = lfw_sample(args.n)
    imgs = load_rgb(paths)
    list_file = Path("/tmp/bench_align_list.txt")
    list_file.write_text("\n".join(str(p) for p in paths) + "\n")
    fn = Facenet(
        args.facenet_python, list_file, args.threads, args.batch, Path("/tmp/bench_fn.npz")
    )
    ours_det = MTCNN()
    ours_det.detect(imgs[: args.batch])  # warm-up

    def ours_run(images):
        res = []
        for s in range(0, len(images), args.batch):
            res += [(d.boxes, d.landmarks) for d in ours_det.detect(images[s : s + args.batch])]
        return res

    # Batches alternate between the two detectors (ours, theirs, ours, ...), so both see the
    # same machine load; each side times only its own detector calls.
    t_ours, t_fn = [], []
    for _ in range(args.rounds):
        ours, a, b = [], 0.0, 0.0
        for s in range(0, len(imgs), args.batch):
            t = time.perf_counter()
            ours += ours_run(imgs[s : s + args.batch])
            a += time.perf_counter() - t
            b += fn.ask(f"batch {s}")["seconds"]
        t_ours.append(a)
        t_fn.append(b)
    ours_flip = ours_run([np.ascontiguousarray(i[:, ::-1]) for i in imgs[: args.flip_n]])
    fn.ask("flip")
    theirs = fn.results(len(imgs))

    n = len(imgs)
    det_ours = sum(len(b) > 0 for b, _ in ours)
    det_fn = sum(len(b) > 0 for b, _ in theirs["plain"])
    d, signed = [], []
    for im, (b, p), (bf, pf) in zip(imgs, ours, theirs["plain"], strict=True):
        if len(b) and len(bf):
            h, w = im.shape[:2]
            diff = p[pick(b, h, w)] - pf[pick(bf, h, w)]
            d.append(np.linalg.norm(diff, axis=1).mean())
            signed.append(diff)
    d = np.array(d)
    signed = np.array(signed)  # (m, 5, 2)
    offset = np.median(signed.reshape(-1, 2), axis=0)
    d_corr = np.linalg.norm(signed - offset, axis=2).mean(1)
    bias_ours = flip_bias(imgs[: args.flip_n], ours[: args.flip_n], ours_flip)
    bias_fn = flip_bias(
        imgs[: args.flip_n], theirs["plain"][: args.flip_n], theirs["flip"][: args.flip_n]
    )
    ips_ours = [n / t for t in t_ours]
    ips_fn = [n / t for t in t_fn]
    ratio = [a / b for a, b in zip(ips_ours, ips_fn, strict=True)]

    print(
        f"\n{n} LFW 150 px originals, batch {args.batch}, {args.threads} torch threads, "
        f"{args.rounds} round(s), batches interleaved\n"
    )
    print("| | facecl MTCNN | facenet-pytorch 2.6.0 MTCNN |")
    print("|---|---|---|")
    print(f"| images/s (median of rounds) | {np.median(ips_ours):.1f} | {np.median(ips_fn):.1f} |")
    print(
        f"| images/s per round | {', '.join(f'{v:.1f}' for v in ips_ours)} | "
        f"{', '.join(f'{v:.1f}' for v in ips_fn)} |"
    )
    print(f"| speed ratio per round | {', '.join(f'{v:.2f}x' for v in ratio)} | 1 |")
    print(
        f"| images with a face | {det_ours}/{n} ({100 * det_ours / n:.2f}%) | "
        f"{det_fn}/{n} ({100 * det_fn / n:.2f}%) |"
    )
    print(
        f"| left-right flip bias of landmark x (px, {args.flip_n} images) | {bias_ours:+.2f} | "
        f"{bias_fn:+.2f} |"
    )
    print()
    print(f"Landmark agreement on the {len(d)} images both found a face in (same face rule):")
    print(
        f"- mean distance: {d.mean():.3f} px (median {np.median(d):.3f}, "
        f"95th pct {np.percentile(d, 95):.3f}, max {d.max():.2f})"
    )
    print(f"- median signed offset ours - facenet: dx {offset[0]:+.3f}, dy {offset[1]:+.3f} px")
    print(
        f"- mean distance after removing that constant offset: {d_corr.mean():.3f} px "
        f"(median {np.median(d_corr):.3f})"
    )


# --------------------------------------------------------------------------- full LFW


def full(args) -> None:
    import torch

    from facecl.align.config import AlignConfig, AlignRuntime
    from facecl.align.stage import run_align

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    s = run_align(AlignConfig(), LFW, args.full, runtime=AlignRuntime(device="cpu"))
    el = time.perf_counter() - t
    c = s.counts
    n = c["processed"]
    print(f"\nfacecl align on all of {LFW} (default config, --on-miss skip):")
    print(
        f"- images: {n}, aligned: {c['status']['ok']} ({100 * c['status']['ok'] / n:.2f}%), "
        f"skipped: {c['skipped']}"
    )
    print(
        f"- end to end (decode, detect, warp, PNG) {el:.0f} s = {n / el:.1f} img/s "
        f"(resumed: {s.resumed})"
    )


def sheet(args) -> None:
    import cv2

    from facecl.align.artifact import read_faces

    out = Path(args.sheet)
    rows = [r for r in read_faces(out) if r.status == "ok"]
    seen, pick_rows = set(), []
    for r in rows:
        if r.identity not in seen:
            seen.add(r.identity)
            pick_rows.append(r)
    step = max(1, len(pick_rows) // (args.rows * args.cols))
    pick_rows = pick_rows[::step][: args.rows * args.cols]
    tiles = [cv2.imread(str(out / r.output)) for r in pick_rows]
    h, w = tiles[0].shape[:2]
    grid = np.zeros((args.rows * (h + 2), args.cols * (w + 2), 3), np.uint8) + 255
    for i, tile in enumerate(tiles):
        y, x = divmod(i, args.cols)
        grid[y * (h + 2) : y * (h + 2) + h, x * (w + 2) : x * (w + 2) + w] = tile
    dst = ROOT / "docs" / "align_contact_sheet.png"
    cv2.imwrite(str(dst), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {dst} ({len(tiles)} crops, one per identity)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="LFW images for the comparison")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flip-n", type=int, default=300)
    ap.add_argument("--facenet-python", default="/tmp/fnp/bin/python")
    ap.add_argument("--full", type=Path, help="align all of LFW into this directory")
    ap.add_argument("--sheet", type=Path, help="contact sheet from this align output")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--cols", type=int, default=12)
    ap.add_argument("--facenet-worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.facenet_worker:
        facenet_worker(args.facenet_worker, args.threads, args.batch, args.worker_out)
    elif args.full:
        full(args)
    elif args.sheet:
        sheet(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
