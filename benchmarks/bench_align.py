"""Benchmark of `facecl align`: our MTCNN vs facenet-pytorch 2.6.0's, side by side.

    .venv/bin/python benchmarks/bench_align.py                 # throughput + agreement
    .venv/bin/python benchmarks/bench_align.py --big 8         # ... and on 12 MP photos
    .venv/bin/python benchmarks/bench_align.py --full OUT      # detection rate, all of LFW
    .venv/bin/python benchmarks/bench_align.py --sheet OUT     # contact sheet from OUT

facenet-pytorch is never a facecl dependency: it lives in its own venv (``--facenet-python``,
default .bench/fnp/bin/python), made by ``make bench-peers`` (benchmarks/make_peer_venv.sh:
facenet-pytorch 2.6.0 with --no-deps over the project venv's torch, Pillow and requests),
and runs in a subprocess driven over stdin, so the two detectors take turns on the same CPU
(batch by batch: ours, theirs, ours, theirs, ...) with the same thread count, the same
decoded images (both decode with Pillow) and the same batch size, and the same weights.
Timed: detection (boxes + landmarks) from decoded RGB arrays; decoding is excluded.

``--big N``: the same comparison on N LFW originals upscaled to 12 MP (3464 x 3464 JPEGs in
the temp directory): ours detects on a copy reduced to ``max_side`` (2000 by default, and
1000 for comparison) and maps the coordinates back to the photo; facenet-pytorch runs its
pyramid on the full photo. Landmark distances are also given in 150 px units.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import record  # noqa: E402

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
            t, c = time.perf_counter(), time.process_time()
            res = run(imgs[s : s + batch])
            el, cpu = time.perf_counter() - t, time.process_time() - c
            saved["plain"][s : s + len(res)] = res
            print(json.dumps({"seconds": el, "cpu_seconds": cpu}), flush=True)
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

    def results(self, n: int, flip: bool = True) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait()
        z = np.load(self.out)
        return {
            k: [(z[f"{k}_b{i}"].reshape(-1, 4), z[f"{k}_p{i}"].reshape(-1, 5, 2)) for i in range(n)]
            for k in (("plain", "flip") if flip else ("plain",))
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


def big_photos(paths: list[Path], side: int, out: Path) -> list[Path]:
    """The photos upscaled to ``side`` x ``side`` (12 MP at 3464) as JPEGs in ``out``
    (made once, reused): large photos with the faces of the small ones."""
    import cv2

    out.mkdir(parents=True, exist_ok=True)
    made = []
    for p in paths:
        dst = out / f"{p.stem}_{side}.jpg"
        if not dst.is_file():
            im = cv2.imread(str(p))
            big = cv2.resize(im, (side, side), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(dst), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
        made.append(dst)
    return made


def compare_on(args, paths: list[Path], batch: int, ours: dict, flip_n: int, unit: float) -> dict:
    """Our detectors and facenet-pytorch's, batch by batch in turn (ours..., theirs, ours...,
    theirs, ...), on ``paths``; prints the table and returns the figures. ``unit``: pixels
    of these photos per pixel of the LFW originals (landmark distances are given in both)."""
    imgs = load_rgb(paths)
    list_file = Path(tempfile.gettempdir()) / "bench_align_list.txt"
    list_file.write_text("\n".join(str(p) for p in paths) + "\n")
    out_npz = Path(tempfile.gettempdir()) / "bench_fn.npz"
    fn = Facenet(args.facenet_python, list_file, args.threads, batch, out_npz)
    for det in ours.values():
        det.detect(imgs[:batch])  # warm-up

    def run(det, images):
        res = []
        for s in range(0, len(images), batch):
            res += [(d.boxes, d.landmarks) for d in det.detect(images[s : s + batch])]
        return res

    # Each side times only its own detector calls; all see the same machine load.
    # CPU seconds too: less sensitive than wall time to other jobs on the machine.
    t_ours: dict[str, list[float]] = {k: [] for k in ours}
    t_fn: list[float] = []
    cpu = dict.fromkeys([*ours, "facenet"], 0.0)
    found: dict[str, list] = {}
    for _ in range(args.rounds):
        secs = dict.fromkeys(ours, 0.0)
        fn_s = 0.0
        found = {k: [] for k in ours}
        for s in range(0, len(imgs), batch):
            for k, det in ours.items():
                t, c = time.perf_counter(), time.process_time()
                found[k] += run(det, imgs[s : s + batch])
                secs[k] += time.perf_counter() - t
                cpu[k] += time.process_time() - c
            got = fn.ask(f"batch {s}")
            fn_s += got["seconds"]
            cpu["facenet"] += got["cpu_seconds"]
        for k in ours:
            t_ours[k].append(secs[k])
        t_fn.append(fn_s)
    first = next(iter(ours))
    ours_flip = run(ours[first], [np.ascontiguousarray(i[:, ::-1]) for i in imgs[:flip_n]])
    if flip_n:
        fn.ask("flip")
    theirs = fn.results(len(imgs), flip=bool(flip_n))
    n = len(imgs)
    ips_fn = [n / t for t in t_fn]
    det_fn = sum(len(b) > 0 for b, _ in theirs["plain"])
    print(
        f"\n{n} photos of {imgs[0].shape[1]}x{imgs[0].shape[0]} px, batch {batch}, "
        f"{args.threads} torch threads, {args.rounds} round(s), batches interleaved\n"
    )
    print(f"| | {' | '.join(ours)} | facenet-pytorch 2.6.0 |")
    print(f"|---|{'---|' * len(ours)}---|")
    fig: dict = {"photos": n, "size": list(imgs[0].shape[:2]), "batch": batch}
    n_all = n * args.rounds
    fig["facenet_pytorch"] = {
        "images_per_s": [round(v, 2) for v in ips_fn],
        "images_per_cpu_s": round(n_all / cpu["facenet"], 2),
        "faces": det_fn,
    }
    rows: dict[str, list[str]] = {"ips": [], "ratio": [], "faces": [], "dist": [], "corr": []}
    rows["cpu"] = []
    for k in ours:
        ips = [n / t for t in t_ours[k]]
        ratio = [a / b for a, b in zip(ips, ips_fn, strict=True)]
        det_k = sum(len(b) > 0 for b, _ in found[k])
        agree = landmark_agreement(imgs, found[k], theirs["plain"])
        rows["ips"].append(", ".join(f"{v:.2f}" for v in ips))
        rows["ratio"].append(", ".join(f"**{v:.2f}x**" for v in ratio))
        rows["faces"].append(f"{det_k}/{n} ({100 * det_k / n:.1f}%)")
        rows["dist"].append(f"{agree['mean']:.2f} px ({agree['mean'] / unit:.2f} at 150 px)")
        rows["corr"].append(f"{agree['mean_offset_removed'] / unit:.2f} at 150 px")
        rows["cpu"].append(f"{n_all / cpu[k]:.1f} (**{cpu['facenet'] / cpu[k]:.2f}x**)")
        fig[k] = {
            "images_per_s": [round(v, 2) for v in ips],
            "ratio": [round(v, 3) for v in ratio],
            "images_per_cpu_s": round(n_all / cpu[k], 2),
            "cpu_ratio": round(cpu["facenet"] / cpu[k], 3),
            "faces": det_k,
            "landmarks_vs_facenet_px": agree,
        }
    ips_fn_s = ", ".join(f"{v:.2f}" for v in ips_fn)
    print(f"| images/s per round | {' | '.join(rows['ips'])} | {ips_fn_s} |")
    print(f"| speed ratio per round | {' | '.join(rows['ratio'])} | 1 |")
    print(
        f"| images per CPU second (ratio) | {' | '.join(rows['cpu'])} | "
        f"{n_all / cpu['facenet']:.1f} |"
    )
    print(f"| images with a face | {' | '.join(rows['faces'])} | {det_fn}/{n} |")
    print(f"| mean landmark distance to facenet | {' | '.join(rows['dist'])} | |")
    print(f"| same, constant offset removed | {' | '.join(rows['corr'])} | |")
    if flip_n:
        bias_ours = flip_bias(imgs[:flip_n], found[first][:flip_n], ours_flip)
        bias_fn = flip_bias(imgs[:flip_n], theirs["plain"][:flip_n], theirs["flip"][:flip_n])
        print(
            f"| flip bias of landmark x (px, {flip_n} images) | {bias_ours:+.2f} | {bias_fn:+.2f} |"
        )
        fig["flip_bias_px"] = {"facecl": round(bias_ours, 3), "facenet_pytorch": round(bias_fn, 3)}
    return fig


def landmark_agreement(imgs, ours, theirs) -> dict:
    """Landmark distances (px) between two detectors' picks (same face rule) on the images
    both found a face in: mean, median, p95, max, median signed offset, mean without it."""
    d, signed = [], []
    for im, (b, p), (bf, pf) in zip(imgs, ours, theirs, strict=True):
        if len(b) and len(bf):
            h, w = im.shape[:2]
            diff = p[pick(b, h, w)] - pf[pick(bf, h, w)]
            d.append(np.linalg.norm(diff, axis=1).mean())
            signed.append(diff)
    if not d:
        return {"images": 0}
    dist, sig = np.array(d), np.array(signed)  # (m,), (m, 5, 2)
    offset = np.median(sig.reshape(-1, 2), axis=0)
    corr = np.linalg.norm(sig - offset, axis=2).mean(1)
    return {
        "images": len(d),
        "mean": round(float(dist.mean()), 3),
        "median": round(float(np.median(dist)), 3),
        "p95": round(float(np.percentile(dist, 95)), 3),
        "max": round(float(dist.max()), 2),
        "median_offset_xy": [round(float(v), 3) for v in offset],
        "mean_offset_removed": round(float(corr.mean()), 3),
    }


def compare(args) -> None:
    import torch

    from facecl.align.mtcnn import MTCNN

    torch.set_num_threads(args.threads)
    if not Path(args.facenet_python).exists() or not LFW.is_dir():
        print(
            f"skipped: needs {LFW} and the facenet-pytorch venv at {args.facenet_python} "
            "(make bench-peers creates it)"
        )
        return
    figs = {
        "lfw_150px": compare_on(
            args,
            lfw_sample(args.n),
            args.batch,
            {"facecl (default)": MTCNN(), "facecl (onnxruntime)": MTCNN(backend="onnxruntime")},
            args.flip_n,
            1.0,
        )
    }
    if args.big:
        side = args.big_side
        big = big_photos(lfw_sample(args.big), side, Path(tempfile.gettempdir()) / "facecl_12mp")
        ours = {
            "facecl (max_side 1000, default)": MTCNN(),
            "facecl (max_side 2000)": MTCNN(max_side=2000),
        }
        figs["photos_12mp"] = compare_on(args, big, args.big_batch, ours, 0, side / 150)
    record("align", {"command": "benchmarks/bench_align.py " + " ".join(sys.argv[1:]), **figs})


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
    ap.add_argument("--facenet-python", default=str(ROOT / ".bench" / "fnp" / "bin" / "python"))
    ap.add_argument("--big", type=int, default=0, help="also compare on N upscaled photos")
    ap.add_argument("--big-side", type=int, default=3464, help="their side (3464: 12 MP)")
    ap.add_argument("--big-batch", type=int, default=2)
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
