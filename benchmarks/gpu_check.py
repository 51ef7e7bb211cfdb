"""`make gpu-check`: everything that needs a GPU, in one command (under 8 minutes on one GPU).

1. ``tests``: the GPU-marked tests (``pytest -m gpu``).
2. ``align``: MTCNN detection images/s, CPU vs CUDA, on the bundled sample's photos; the
   whole align stage with crops written serially vs behind the detector (``--writers``).
3. ``train_step``: sphere20 at 112x96, images/s of a train step on CPU (fp32) and CUDA (fp32,
   AMP bfloat16, AMP float16; in memory, and AMP bfloat16 through the HDF5 loader).
4. ``embed``: sphere20 embedding images/s, torch on CUDA (fp16) vs onnxruntime with its CUDA
   provider when this onnxruntime has one (else its CPU provider, said in the file).
5. ``chain``: the bundled sample with CUDA + AMP: align -> pack -> train (about 2 minutes,
   steps sized from step 3) -> embed -> verify (the sample's 60 pairs).

Every figure goes to ONE JSON file (``--out``, default gpu_check.json, rewritten after each
section so a timeout keeps what was measured) and a summary is printed. A section that fails
is recorded with its error and the others still run; the exit status is 1 if any failed.
Without CUDA it prints "no CUDA device: skipped" and exits 0. ``--smoke`` runs every section
on the CPU with tiny sizes (a check of this script, not a measurement).

    .venv/bin/python benchmarks/gpu_check.py [--out gpu_check.json] [--train-seconds 120]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "tests" / "data" / "lfw_mini"
BUDGET_S = 8 * 60  # the whole check; the chain's train shrinks to stay inside it


@dataclass(frozen=True)
class Plan:
    """Sizes of every section (``--smoke``: tiny, on the CPU)."""

    device: str = "cuda"
    arch: str = "sphere20"
    cpu_batch: int = 32
    cpu_steps: tuple[int, int] = (1, 3)  # (warm-up, timed)
    gpu_batch: int = 128
    gpu_steps: tuple[int, int] = (5, 20)
    loader_workers: int = 4
    align_batch: int = 32
    align_rounds: int = 2
    embed_images: int = 512
    embed_batch: int = 256
    embed_rounds: int = 2
    train_seconds: float = 120.0
    min_steps: int = 50
    pytest_timeout_s: int = 240


SMOKE = Plan(
    device="cpu",
    arch="tiny",
    cpu_batch=8,
    cpu_steps=(1, 2),
    gpu_batch=8,
    gpu_steps=(1, 2),
    loader_workers=0,
    align_batch=16,
    align_rounds=1,
    embed_images=32,
    embed_batch=16,
    embed_rounds=1,
    train_seconds=5.0,
    min_steps=3,
    pytest_timeout_s=120,
)


# --------------------------------------------------------------------------- sections


def environment(plan: Plan) -> dict[str, Any]:
    import onnxruntime
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if plan.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = p.name
        info["gpu_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["capability"] = f"{p.major}.{p.minor}"
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


def gpu_tests(plan: Plan) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rs",
        "-m",
        "gpu",
        "-p",
        "no:cacheprovider",
        "tests",
    ]
    r = _run(cmd, plan.pytest_timeout_s)
    tail = (r.stdout + r.stderr).strip().splitlines()
    words = ("passed", "skipped", "failed", "deselected", "error")
    summary = next((ln for ln in reversed(tail) if any(w in ln for w in words)), "")
    if r.returncode not in (0, 5):  # 5: nothing collected (also a failure below)
        raise RuntimeError(f"pytest -m gpu exited {r.returncode}: {summary or tail[-1:]}")
    if plan.device == "cuda" and "passed" not in summary:
        raise RuntimeError(f"no GPU test ran on this CUDA machine: {summary}")
    # Some skip by design on a CUDA machine (NCCL needs two GPUs; the one-GPU refusal needs
    # one; onnxruntime's CUDA provider needs onnxruntime-gpu): their reasons are kept.
    skipped = [ln for ln in tail if ln.startswith("SKIPPED")]
    return {"summary": summary.strip("= "), "returncode": r.returncode, "skipped": skipped}


def align_bench(plan: Plan) -> dict[str, Any]:
    from benchmarks.bench_align import load_rgb, mtcnn_throughput

    images = load_rgb(sorted((SAMPLE / "lfw_original_150px").rglob("*.jpg")))
    out: dict[str, Any] = {"images": len(images), "batch": plan.align_batch}
    for dev in dict.fromkeys(("cpu", plan.device)):
        out[dev] = mtcnn_throughput(images, dev, plan.align_batch, plan.align_rounds)
    out["speedup"] = out[plan.device]["images_per_s"] / out["cpu"]["images_per_s"]
    out["stage_overlap"] = _align_overlap(plan)
    return out


def _align_overlap(plan: Plan) -> dict[str, Any]:
    """The whole align stage on the sample, warp + PNG writes serial vs behind the detector
    (``--writers 0`` vs ``2``, issue 18 item 8), with the outputs' byte equality."""
    from benchmarks.bench_align_overlap import overlap_compare

    return overlap_compare(plan.device, plan.align_rounds, 2, None)


def train_bench(plan: Plan, work: Path) -> dict[str, Any]:
    import torch

    from benchmarks.bench_train import InMemory, measure
    from facecl.pack.dataset import ShardDataset
    from facecl.train.config import TrainConfig
    from tests.train.helpers import make_pack

    pack = make_pack(work, classes=32, per_class=8, size=(112, 96), shard_size=64)
    memory = InMemory(ShardDataset(pack))
    base = TrainConfig(arch=plan.arch, loss="cl", log_every=1, checkpoint_every=10**6)
    d, b, g = plan.device, plan.gpu_batch, plan.gpu_steps
    w, loader = plan.loader_workers, ShardDataset(pack)
    rows: list[tuple[str, str, int, bool, str, Any, int, tuple[int, int]]] = [
        # (name, device, batch, amp, amp dtype, dataset, workers, (warm-up, timed) steps)
        ("cpu fp32", "cpu", plan.cpu_batch, False, "bfloat16", memory, 0, plan.cpu_steps),
        ("cuda fp32", d, b, False, "bfloat16", memory, 0, g),
        ("cuda amp bf16", d, b, True, "bfloat16", memory, 0, g),
        ("cuda amp fp16", d, b, True, "float16", memory, 0, g),
        (f"cuda amp bf16 hdf5 w={w}", d, b, True, "bfloat16", loader, w, g),  # the chain's path
    ]
    out: dict[str, Any] = {"arch": plan.arch, "input": "112x96", "runs": {}}
    for name, dev, batch, amp, dtype, ds, workers, (warm, timed) in rows:
        cfg = replace(
            base,
            device=dev,
            batch_size=batch,
            amp=amp,
            amp_dtype=dtype,
            workers=workers,
            steps=warm + timed,
        )
        cuda = dev.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        ips, wait, step_s = measure(cfg, ds, work / name.replace(" ", "_"), warm)
        out["runs"][name] = {
            "batch": batch,
            "images_per_s": ips,
            "step_s": step_s,
            "loader_wait_share": wait,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        }
    runs = out["runs"]
    out["speedup_amp_bf16_vs_cpu"] = (
        runs["cuda amp bf16"]["images_per_s"] / runs["cpu fp32"]["images_per_s"]
    )
    out["speedup_amp_bf16_vs_fp32"] = (
        runs["cuda amp bf16"]["images_per_s"] / runs["cuda fp32"]["images_per_s"]
    )
    return out


def embed_bench(plan: Plan, work: Path) -> dict[str, Any]:
    import onnxruntime

    from benchmarks.bench_embed import bench_images, make_model, time_backends
    from facecl.embed.backends import OnnxBackend, TorchBackend, resolve_model
    from facecl.embed.export import cosine_rows

    net, rep, export_s = make_model(plan.arch, work)
    images = bench_images(tuple(net.input_size), plan.embed_images)
    ort_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ort_dev = plan.device if ort_cuda else "cpu"
    backends = {
        f"torch {plan.device}": TorchBackend(
            resolve_model(work / "model.pt"), "concat", False, plan.device
        ),
        "torch cpu": TorchBackend(
            resolve_model(work / "model.pt"), "concat", False, "cpu", precision="float32"
        ),
        f"onnxruntime {ort_dev}": OnnxBackend(
            resolve_model(work / "model.onnx"), "concat", False, ort_dev
        ),
    }
    res = time_backends(backends, images, plan.embed_batch, plan.embed_rounds)
    outs = res["outputs"]
    ref = outs["torch cpu"]
    return {
        "arch": plan.arch,
        "images": len(images),
        "batch": plan.embed_batch,
        "images_per_s": res["images_per_s"],
        "dtype": {k: b.dtype for k, b in backends.items()},
        "min_cosine_vs_torch_cpu": {k: float(cosine_rows(ref, v).min()) for k, v in outs.items()},
        "onnxruntime_cuda_provider": ort_cuda,
        "note": "" if ort_cuda else "onnxruntime has no CUDA provider here: its CPU provider ran",
        "export_s": export_s,
        "export_parity_max_cosine_distance": rep["parity_max_cosine_distance"],
    }


def chain(plan: Plan, work: Path, train_bench_result: dict[str, Any] | None, left_s: float):
    """align -> pack -> train (CUDA + AMP, ~train_seconds) -> embed -> verify on the sample."""
    seconds = max(10.0, min(plan.train_seconds, left_s))
    ips = None
    if train_bench_result:
        runs = train_bench_result["runs"]
        ips = next(v["images_per_s"] for k, v in runs.items() if k.startswith("cuda amp bf16 hdf5"))
    steps = max(plan.min_steps, int(0.9 * seconds * ips / plan.gpu_batch) if ips else 1000)
    excl = work / "pair_identities.txt"
    excl.write_text("\n".join(sorted(_pair_identities(SAMPLE / "pairs.txt"))) + "\n")
    where = {
        "photos": SAMPLE / "lfw_original_150px",
        "pairs": SAMPLE / "pairs.txt",
        "excl": excl,
        "w": work,
        "dev": plan.device,
        "arch": plan.arch,
        "steps": steps,
        "batch": plan.gpu_batch,
        "amp": "--amp" if plan.device == "cuda" else "--no-amp",
        "workers": plan.loader_workers,
    }
    stages = [  # (stage, argv template: $name is a value of `where`, timeout s)
        ("align", "align $photos -o $w/aligned --on-miss center --device $dev", 120),
        ("pack", "pack $w/aligned -o $w/packed --exclude $excl", 120),
        (
            "train",
            "train $w/packed -o $w/run --arch $arch --loss cl --steps $steps --batch-size $batch"
            " --lr 0.01 $amp --workers $workers --checkpoint-every 1000000 --no-progress"
            " --device $dev",
            int(3 * seconds + 60),
        ),
        ("embed", "embed $w/run $w/aligned -o $w/emb --device $dev", 120),
        ("verify", "verify $w/emb --protocol lfw-pairs --pairs $pairs -o $w/report", 120),
    ]
    out: dict[str, Any] = {"train_steps": steps, "train_batch": plan.gpu_batch, "stage_seconds": {}}
    for name, template, timeout in stages:
        t = time.perf_counter()
        doc = _facecl([*_argv(template, where), "--json"], timeout)
        out["stage_seconds"][name] = round(time.perf_counter() - t, 2)
        out[name] = _pick(name, doc)
    return out


# --------------------------------------------------------------------------- helpers


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        return subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... did not finish in {timeout:.0f} s") from e


def _argv(template: str, where: dict[str, Any]) -> list[str]:
    """Split on spaces, then fill ``$name`` and ``$name/rest`` (values may contain spaces)."""
    out = []
    for word in template.split():
        if word.startswith("$"):
            name, _, rest = word[1:].partition("/")
            word = str(Path(str(where[name])) / rest) if rest else str(where[name])
        out.append(word)
    return out


def _facecl(argv: list[str], timeout: float) -> dict[str, Any]:
    r = _run([sys.executable, "-m", "facecl", *argv], timeout)
    if r.returncode != 0:
        err = r.stderr.strip().splitlines()
        raise RuntimeError(f"facecl {argv[0]} exited {r.returncode}: {err[-1] if err else ''}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def _pick(stage: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The figures worth keeping from a stage's --json summary (numbers and short strings)."""
    if stage == "verify":
        doc = doc.get("summary", doc)
    if stage == "train":
        doc = {**doc, **{f"final_{k}": v for k, v in (doc.get("final") or {}).items()}}
    return {k: v for k, v in doc.items() if isinstance(v, int | float | bool) or k == "device"}


def _pair_identities(pairs: Path) -> set[str]:
    names: set[str] = set()
    for line in pairs.read_text().splitlines()[1:]:
        f = line.split()
        names.update([f[0]] if len(f) == 3 else [f[0], f[2]] if len(f) == 4 else [])
    return names


def _section(doc: dict[str, Any], out: Path, name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    print(f"== {name}", file=sys.stderr, flush=True)
    try:
        result = fn()
        doc["sections"][name] = {"ok": True, **result}
    except Exception as e:  # noqa: BLE001 - recorded, and the next section still runs
        result = None
        doc["sections"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        traceback.print_exc()
    doc["sections"][name]["seconds"] = round(time.perf_counter() - t, 2)
    doc["ok"] = all(s["ok"] for s in doc["sections"].values())
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return result


def _summary(doc: dict[str, Any]) -> list[str]:
    s = doc["sections"]
    lines = [
        f"gpu check on {s.get('environment', {}).get('gpu', doc['device'])}: "
        f"{'ok' if doc['ok'] else 'FAILED'} in {doc['seconds']:.0f} s"
    ]
    for name, sec in s.items():
        if not sec["ok"]:
            lines.append(f"  {name}: FAILED {sec['error']}")
    if s.get("tests", {}).get("ok"):
        lines.append(f"  tests: {s['tests']['summary']}")
    if s.get("align", {}).get("ok"):
        a, d = s["align"], doc["device"]
        lines.append(
            f"  align MTCNN img/s: cpu {a['cpu']['images_per_s']:.0f}, "
            f"{d} {a[d]['images_per_s']:.0f} ({a['speedup']:.1f}x)"
        )
    if s.get("train_step", {}).get("ok"):
        runs = s["train_step"]["runs"]
        lines.append(
            "  train img/s: " + ", ".join(f"{k} {v['images_per_s']:.0f}" for k, v in runs.items())
        )
    if s.get("embed", {}).get("ok"):
        lines.append(
            "  embed img/s: "
            + ", ".join(f"{k} {v:.0f}" for k, v in s["embed"]["images_per_s"].items())
        )
    if s.get("chain", {}).get("ok"):
        c = s["chain"]
        acc = {k: v for k, v in c["verify"].items() if "acc" in k}
        lines.append(
            f"  chain: {c['train_steps']} steps in {c['stage_seconds']['train']:.0f} s, "
            f"verify {acc}"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--train-seconds", type=float, default=Plan.train_seconds)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    args = ap.parse_args()
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: skipped")
        return 0
    plan = SMOKE if args.smoke else replace(Plan(), train_seconds=args.train_seconds)
    t0 = time.perf_counter()
    doc: dict[str, Any] = {"device": plan.device, "plan": plan.__dict__, "sections": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        w = Path(tmp)
        _section(doc, args.out, "environment", lambda: environment(plan))
        _section(doc, args.out, "tests", lambda: gpu_tests(plan))
        _section(doc, args.out, "align", lambda: align_bench(plan))
        tb = _section(doc, args.out, "train_step", lambda: train_bench(plan, w / "train"))
        _section(doc, args.out, "embed", lambda: embed_bench(plan, _mkdir(w / "embed")))
        left = BUDGET_S - 90 - (time.perf_counter() - t0)  # 90 s: the chain's other stages
        _section(doc, args.out, "chain", lambda: chain(plan, _mkdir(w / "chain"), tb, left))
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print("\n".join(_summary(doc)))
    print(f"figures: {args.out}")
    return 0 if doc["ok"] else 1


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


if __name__ == "__main__":
    sys.exit(main())
