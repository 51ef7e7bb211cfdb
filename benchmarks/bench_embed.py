"""Embedding throughput: torch eager vs onnxruntime, side by side in one run.

    .venv/bin/python benchmarks/bench_embed.py [--arch sphere20] [--batch 64] [--images 256]

Builds a randomly initialised checkpoint of ``--arch`` (weights do not change the cost),
exports it with ``facecl export`` (which checks parity on the bundled aligned faces), then
times the embed pipeline of both backends (uint8 crops -> preprocessing -> FC1 of image and
flip -> concat) on the same real aligned faces, batch by batch, alternating, so both see
the same machine load. Prints a markdown table: images/s over all rounds, and the median of the
per-batch speed-ups (each onnxruntime batch timed right after the same torch batch), which
is robust to load from other jobs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sphere20")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=256, help="images per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fusion", default="concat")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (torch; ORT uses its CUDA EP)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    from facecl.embed.backends import OnnxBackend, TorchBackend, resolve_model
    from facecl.embed.export import cosine_rows
    from facecl.models import create_backbone, list_backbones

    torch.set_num_threads(args.threads)
    arch = args.arch
    if arch not in list_backbones():
        biggest = max(list_backbones(), key=lambda n: _params(create_backbone(n)))
        print(f"note: backbone {arch!r} does not exist here; using the largest, {biggest!r}")
        arch = biggest
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    net, rep, export_s = make_model(arch, tmp)
    images = bench_images(tuple(net.input_size), args.images)
    # Like with like: both backends in float32 (torch would otherwise autocast on CUDA); on
    # CUDA onnxruntime needs its CUDA provider (onnxruntime-gpu), else it is timed on the CPU
    # and the table says so.
    import onnxruntime

    ort_device = args.device
    if (
        args.device == "cuda"
        and "CUDAExecutionProvider" not in onnxruntime.get_available_providers()
    ):
        print("note: onnxruntime has no CUDA provider (CPU wheel): onnxruntime runs on the CPU")
        ort_device = "cpu"
    model_pt, model_onnx = resolve_model(tmp / "model.pt"), resolve_model(tmp / "model.onnx")
    backends = {
        "torch": TorchBackend(model_pt, args.fusion, False, args.device, precision="float32"),
        "onnxruntime": OnnxBackend(model_onnx, args.fusion, False, ort_device),
    }
    res = time_backends(backends, images, args.batch, args.rounds)
    times, speeds = res["batch_s"], res["images_per_s"]
    cos = cosine_rows(res["outputs"]["torch"], res["outputs"]["onnxruntime"])
    paired = [t / o for t, o in zip(times["torch"], times["onnxruntime"], strict=True)]

    dev = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(
        f"\n{arch} ({_params(net) / 1e6:.1f} M params), {args.fusion} fusion (2 forward passes "
        f"per image), batch {args.batch}, {args.images} images x {args.rounds} rounds, "
        f"{args.threads} threads, device {args.device} ({dev}; onnxruntime on {ort_device}), "
        f"float32 both; torch {torch.__version__}, "
        f"onnxruntime {_ort_version()}\n"
    )
    print(f"| backend | images/s | s per batch of {args.batch} (median) | vs torch eager |")
    print("|---|---:|---:|---:|")
    for k in ("torch", "onnxruntime"):
        ratio = speeds[k] / speeds["torch"]
        print(f"| {k} | {speeds[k]:.1f} | {statistics.median(times[k]):.2f} | {ratio:.2f}x |")
    q = statistics.quantiles(paired, n=4)
    print(
        f"\npaired per-batch speed-up of onnxruntime over torch: "
        f"median {statistics.median(paired):.2f}x "
        f"(quartiles {q[0]:.2f}x - {q[2]:.2f}x, {len(paired)} batch pairs)"
    )
    print(
        f"\nexport {export_s:.1f} s, parity on {rep['parity_faces']} bundled faces: max cosine "
        f"distance {rep['parity_max_cosine_distance']:.1e}; torch vs onnxruntime embed on the "
        f"benchmark batch: min cosine {cos.min():.7f}"
    )


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
