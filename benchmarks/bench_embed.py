"""Embedding throughput: torch eager (NCHW) vs the default backend and onnxruntime, side by
side in one run.

    .venv/bin/python benchmarks/bench_embed.py [--arch sphere20] [--batch 64] [--images 256]

Builds a randomly initialised checkpoint of ``--arch`` (weights do not change the cost),
exports it with ``facecl export`` (which checks parity on the bundled aligned faces), then
times the embed pipeline of each backend (uint8 crops -> preprocessing -> FC1 of image and
flip -> concat) on the same real aligned faces, batch by batch, alternating, so all see the
same machine load:

  * ``torch eager NCHW``: torch's default layout in float32, the baseline
    (``--memory-format contiguous --precision float32``)
  * ``torch channels_last float32``: facecl's layout (``EmbedConfig.memory_format``), exact
  * ``onnxruntime``: the exported file on its CPU provider (default graph optimisations)
  * ``torch default``: ``EmbedConfig()`` as it resolves here: channels_last, and bfloat16
    autocast on a CPU with native bf16 (AMX / AVX512-BF16), else float32 (then it is the
    channels_last row again)

Prints a markdown table: images/s, GFLOP/s and its share of the measured fp32 peak (the best
2048^3 matmul on the same threads, measured before and after, the higher kept), and the
median of the per-batch speed-ups over the baseline (each batch of a backend timed right
after the same batch of the baseline), which is robust to load from other jobs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from benchmarks.common import forward_gflop, peak_gflops, record
except ModuleNotFoundError:  # run as a script: benchmarks/ is on sys.path, not the root
    from common import forward_gflop, peak_gflops, record  # type: ignore[no-redef]


def make_model(arch: str, tmp: Path) -> tuple[torch.nn.Module, dict, float]:
    """A randomly initialised ``arch`` checkpoint at tmp/model.pt, exported to tmp/model.onnx
    with ``facecl export`` (parity-checked): the net, the export report and its seconds."""
    from facecl.embed.config import ExportConfig
    from facecl.embed.export import run_export
    from facecl.models import create_backbone
    from facecl.train.checkpoint import save_checkpoint

    net = create_backbone(arch)
    save_checkpoint(
        tmp / "model.pt",
        {
            "arch": arch,
            "arch_kwargs": {},
            "feature_dim": int(net.feature_dim),
            "input_size": list(net.input_size),
            "config": {},
            "model": net.state_dict(),
        },
    )
    t = time.perf_counter()
    rep = run_export(tmp / "model.pt", tmp / "model.onnx", ExportConfig())
    return net, rep, time.perf_counter() - t


def bench_images(size: tuple[int, int], n: int) -> np.ndarray:
    """``n`` real aligned faces (N, H, W, 3) uint8 (the bundled ones, repeated)."""
    from facecl.embed.export import load_faces

    faces = load_faces(None, size, 10_000)
    return np.concatenate([faces] * -(-n // len(faces)))[:n]


def time_backends(
    backends: dict[str, Any], images: np.ndarray, batch: int, rounds: int
) -> dict[str, Any]:
    """Interleaved per batch (a, b, a, b, ...) so every backend sees the same machine load.
    Returns images/s and per-batch seconds of each, and the first round's outputs."""
    for b in backends.values():  # warm-up
        b.embed(images[:batch])
    times: dict[str, list[float]] = {k: [] for k in backends}
    outs: dict[str, list[np.ndarray]] = {k: [] for k in backends}
    for r in range(rounds):
        for i in range(0, len(images), batch):
            for name, b in backends.items():
                t0 = time.perf_counter()
                out = b.embed(images[i : i + batch])  # returns host arrays: synchronised
                times[name].append(time.perf_counter() - t0)
                if r == 0:
                    outs[name].append(out)
    n_img = len(images) * rounds
    return {
        "images_per_s": {k: n_img / sum(v) for k, v in times.items()},
        "batch_s": times,
        "outputs": {k: np.concatenate(v) for k, v in outs.items()},
    }


BASELINE = "torch eager NCHW"


def make_backends(tmp: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The backends timed, baseline first, and the device onnxruntime runs on."""
    import onnxruntime

    from facecl.embed.backends import OnnxBackend, TorchBackend, resolve_model

    # Like with like: float32 everywhere but the default row (torch would otherwise autocast on
    # CUDA); on CUDA onnxruntime needs its CUDA provider (onnxruntime-gpu), else it is timed
    # on the CPU and the table says so.
    ort_device = args.device
    if (
        args.device == "cuda"
        and "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    ):
        print("note: onnxruntime has no CUDA provider (CPU wheel): onnxruntime runs on the CPU")
        ort_device = "cpu"
    pt, onnx = resolve_model(tmp / "model.pt"), resolve_model(tmp / "model.onnx")
    f, d = args.fusion, args.device
    backends: dict[str, Any] = {
        BASELINE: TorchBackend(pt, f, False, d, precision="float32", memory_format="contiguous"),
        "torch channels_last float32": TorchBackend(pt, f, False, d, precision="float32"),
        "onnxruntime": OnnxBackend(onnx, f, False, ort_device),
    }
    default = TorchBackend(pt, f, False, d)  # EmbedConfig's precision auto
    backends[f"torch default ({default.dtype})"] = default
    return backends, ort_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sphere20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=256, help="images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fusion", default="concat")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (torch; ORT uses its CUDA EP)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # old commands
    args = ap.parse_args()

    from facecl.embed.export import cosine_rows
    from facecl.embed.features import uses_flip
    from facecl.models import create_backbone, list_backbones

    torch.set_num_threads(args.threads)
    arch = args.arch
    if arch not in list_backbones():
        biggest = max(list_backbones(), key=lambda n: _params(create_backbone(n)))
        print(f"note: backbone {arch!r} does not exist here; using the largest, {biggest!r}")
        arch = biggest
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    net, rep, export_s = make_model(arch, tmp)
    gflop_img = forward_gflop(net, (3, *net.input_size)) * (2 if uses_flip(args.fusion) else 1)
    images = bench_images(tuple(net.input_size), args.images)
    backends, ort_device = make_backends(tmp, args)
    peak = peak_gflops(args.threads)
    res = time_backends(backends, images, args.batch, args.rounds)
    peak = max(peak, peak_gflops(args.threads))
    times, speeds, outs = res["batch_s"], res["images_per_s"], res["outputs"]

    dev = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(
        f"\n{arch} ({_params(net) / 1e6:.1f} M params, {gflop_img:.2f} GFLOP per image with "
        f"{args.fusion} fusion), batch {args.batch}, {args.images} images x {args.rounds} "
        f"rounds, {args.threads} threads, device {args.device} ({dev}; onnxruntime on "
        f"{ort_device}); torch {torch.__version__}, onnxruntime {_ort_version()}; measured "
        f"fp32 peak {peak:.0f} GFLOP/s (matmul), load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        f"| backend | images/s | GFLOP/s | of peak | s per batch of {args.batch} (median) "
        f"| paired speed-up vs eager NCHW (median, quartiles) | min cosine vs eager |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = {}
    for k in backends:
        paired = [t / o for t, o in zip(times[BASELINE], times[k], strict=True)]
        q = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
        cos = float(cosine_rows(outs[BASELINE], outs[k]).min())
        gf = speeds[k] * gflop_img
        rows[k] = {
            "images_per_s": round(speeds[k], 2),
            "gflop_per_s": round(gf, 1),
            "peak_share": round(gf / peak, 3),
            "paired_speedup_median": round(statistics.median(paired), 3),
            "paired_speedup_quartiles": [round(q[0], 3), round(q[2], 3)],
            "min_cosine_vs_baseline": cos,
        }
        print(
            f"| {k} | {speeds[k]:.1f} | {gf:.0f} | {100 * gf / peak:.0f}% | "
            f"{statistics.median(times[k]):.2f} | **{statistics.median(paired):.2f}x** "
            f"({q[0]:.2f}-{q[2]:.2f}) | {cos:.7f} |"
        )
    print(
        f"\nexport {export_s:.1f} s, parity on {rep['parity_faces']} bundled faces: max cosine "
        f"distance {rep['parity_max_cosine_distance']:.1e}"
    )
    record(
        "embed",
        {
            "command": "benchmarks/bench_embed.py " + " ".join(sys.argv[1:]),
            "arch": arch,
            "gflop_per_image": round(gflop_img, 3),
            "peak_gflop_per_s": round(peak, 1),
            "threads": args.threads,
            "baseline": BASELINE,
            "backends": rows,
        },
    )


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
