"""Scale benchmark (issue 17): time and peak RSS of verify and of embed's final merge vs size.

    .venv/bin/python benchmarks/bench_scale_verify.py [--only identify,blufr,pairs,merge]
        [--sizes identify=10000,100000 ...] [--before 939f07f] [--cap-gib 12] [--out rows.jsonl]

Every measurement is a fresh worker subprocess (this script with ``--worker``) that builds
synthetic data, runs the facecl code and reports its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``; the data it built is included) and times. The parent
kills a worker whose RSS passes ``--cap-gib`` and reports it as killed.

``--before REF`` also runs each size on the code of git commit REF (``git archive`` into a
temp dir, first on the worker's ``sys.path``): the dense implementation, side by side, at
the sizes it can hold.

* identify: gallery G (one image per identity, random 512-d), 10k probes (half of gallery
  identities, with noise; half of other identities); ``evaluate_identify`` with ``--no-plots``
  (no histogram pass) unless ``plots`` is in the spec.
* blufr: one trial on a test set of N images, 10 per identity; gallery = one image of half
  the identities, probes = the other test images; ``evaluate_blufr``.
* pairs: N pairs (half genuine) over N / 5 images, 10 folds; ``evaluate_pairs``.
* merge: N rows in chunk files of 16,384 rows, merged by embed's ``_finish`` (stand-in
  source and backend objects; the same function of the tree under test).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = {
    "identify": [10_000, 100_000, 300_000, 1_000_000],
    "blufr": [10_000, 30_000, 100_000],
    "pairs": [100_000, 300_000, 1_000_000],
    "merge": [200_000, 600_000, 2_000_000],
}
DIM = 512
_MARK: dict[str, float] = {}  # the worker's RSS when the measured call starts (data built)


def _randn(rng: np.random.Generator, n: int, d: int = DIM) -> np.ndarray:
    """(n, d) float32 standard normal, made 65k rows at a time (no float64 copy)."""
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 65536):
        out[i : i + 65536] = rng.standard_normal((min(65536, n - i), d), dtype=np.float32)
    return out


def _emb(vectors: np.ndarray, ids: list[str], keys: list[str]):
    from facecl.embed.artifact import from_arrays

    data = {"embeddings": vectors, "keys": np.array(keys), "identities": np.array(ids)}
    return from_arrays(data, Path("synthetic.h5"), {})


# --------------------------------------------------------------------------- workers


def work_identify(n: int, plots: bool, tmp: Path) -> dict:
    from facecl.verify.config import VerifyConfig
    from facecl.verify.evaluate import evaluate_identify

    rng = np.random.default_rng(0)
    n_p = 10_000
    vectors = _randn(rng, n + n_p)  # gallery rows, then the probes (one array, no concat)
    gen_ids = rng.integers(0, n, n_p // 2)
    vectors[n : n + n_p // 2] = vectors[gen_ids] + 3.0 * _randn(rng, n_p // 2)
    ids = [f"I{i:07d}" for i in range(n)]
    ids += [f"I{i:07d}" for i in gen_ids] + [f"J{j:07d}" for j in range(n_p // 2)]
    keys = [f"{p}/{p}_{j:05d}" for j, p in enumerate(ids)]
    emb = _emb(vectors, ids, keys)
    del vectors
    (tmp / "g.txt").write_text("\n".join(keys[:n]) + "\n")
    (tmp / "p.txt").write_text("\n".join(keys[n:]) + "\n")
    _MARK["rss"], t0 = _rss_gib(os.getpid()), time.perf_counter()
    ev = evaluate_identify(emb, str(tmp / "g.txt"), str(tmp / "p.txt"), VerifyConfig(
        protocol="identify", plots=plots))  # fmt: skip
    res = ev.report["results"]
    return {"seconds": time.perf_counter() - t0, "rank1": res["rank1"],
            "dir": res["open_set"]["dir@far=0.01,rank=1"]}  # fmt: skip


def work_blufr(n: int, tmp: Path) -> dict:
    from facecl.verify.config import VerifyConfig
    from facecl.verify.evaluate import evaluate_blufr
    from facecl.verify.protocols import BlufrConfig, BlufrTrial

    rng = np.random.default_rng(0)
    per = 10
    n_ids = n // per
    centre = _randn(rng, n_ids)
    lab = np.repeat(np.arange(n_ids), per)
    x = centre[lab] + 1.5 * _randn(rng, n)
    del centre
    ids = [f"I{i:07d}" for i in lab]
    keys = [f"{p}/{p}_{j:04d}" for p, j in zip(ids, np.tile(np.arange(per), n_ids), strict=True)]
    emb = _emb(x, ids, keys)
    del x
    test = np.arange(n)
    gallery = np.arange(0, n // 2, per)  # first image of the first half of the identities
    trial = BlufrTrial(np.zeros(0, np.int64), test, gallery, np.setdiff1d(test, gallery))
    conf = BlufrConfig([k + ".jpg" for k in keys], keys, lab + 1, [trial],
                       np.zeros(0, np.int64), np.zeros(0, np.int64), "synthetic")  # fmt: skip
    _MARK["rss"], t0 = _rss_gib(os.getpid()), time.perf_counter()
    ev = evaluate_blufr(emb, conf, VerifyConfig(protocol="blufr"))
    rec = ev.report["results"]["trials"][0]
    return {"seconds": time.perf_counter() - t0, "vr": rec["vr"], "dir": rec["dir"],
            "n_impostor_pairs": rec["n_impostor_pairs"]}  # fmt: skip


def work_pairs(n: int, tmp: Path) -> dict:
    from facecl.verify.config import VerifyConfig
    from facecl.verify.evaluate import evaluate_pairs
    from facecl.verify.protocols import PairList

    rng = np.random.default_rng(0)
    per, n_img = 10, max(n // 5, 20)
    n_ids = n_img // per
    lab = np.repeat(np.arange(n_ids), per)
    x = _randn(rng, n_ids)[lab] + 1.5 * _randn(rng, n_img)
    ids = [f"I{i:07d}" for i in lab]
    keys = [f"{p}/{p}_{j:04d}" for p, j in zip(ids, np.tile(np.arange(per), n_ids), strict=True)]
    emb = _emb(x, ids, keys)
    del x
    half = n // 2
    a = rng.integers(0, n_img, n)
    b = np.r_[(a[:half] // per) * per + (a[:half] % per + 1 + rng.integers(0, per - 1, half)) % per,
              rng.integers(0, n_img, n - half)]  # fmt: skip
    same = lab[a] == lab[b]
    pl = PairList([keys[i] for i in a], [keys[i] for i in b], same, np.arange(n) % 10, "synthetic")
    _MARK["rss"], t0 = _rss_gib(os.getpid()), time.perf_counter()
    ev = evaluate_pairs(emb, pl, VerifyConfig(protocol="pairs", plots=False))
    return {
        "seconds": time.perf_counter() - t0,
        "accuracy": ev.report["results"]["accuracy"]["mean"],
    }


def work_merge(n: int, tmp: Path) -> dict:
    from facecl.embed import stage

    cs = 16_384
    rng = np.random.default_rng(0)
    chunk_dir = tmp / "chunks"
    chunk_dir.mkdir()
    for i in range(-(-n // cs)):
        rows = min(cs, n - i * cs)
        stage._save_chunk(stage._chunk_path(chunk_dir, i), _randn(rng, rows), ["ok"] * rows)
    items = [SimpleNamespace(status="ok", key=f"I{i // 10:07d}/I{i // 10:07d}_{i % 10:04d}",
                             path=f"/d/I{i // 10:07d}/{i % 10:04d}.jpg", identity=f"I{i // 10:07d}")
             for i in range(n)]  # fmt: skip
    source = SimpleNamespace(items=items, kind="synthetic", notes={})
    backend = SimpleNamespace(dim=DIM, describe=lambda: {"backend": "synthetic"})
    _MARK["rss"], t0 = _rss_gib(os.getpid()), time.perf_counter()
    counts, _ = stage._finish(
        tmp, chunk_dir, _Sized(source), backend, SimpleNamespace(chunk_size=cs)
    )
    return {"seconds": time.perf_counter() - t0, "written": counts["written"]}


class _Sized(SimpleNamespace):
    def __init__(self, ns: SimpleNamespace) -> None:
        super().__init__(**vars(ns))

    def __len__(self) -> int:
        return len(self.items)


def worker(kind: str, n: int, plots: bool) -> None:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        if kind == "identify":
            out = work_identify(n, plots, Path(d))
        else:
            out = {"blufr": work_blufr, "pairs": work_pairs, "merge": work_merge}[kind](n, Path(d))
    use = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_gib"] = use.ru_maxrss / 2**20
    out["cpu_s"] = use.ru_utime + use.ru_stime  # the whole worker, data building included
    out["rss_before_gib"] = _MARK.get("rss", 0.0)
    out["start_rss_gib"] = rss0 / 2**20
    print("RESULT " + json.dumps(out))


# --------------------------------------------------------------------------- parent


def _rss_gib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def measure(kind: str, n: int, plots: bool, src: Path | None, cap_gib: float) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n)] + (
        ["--plots"] if plots else []
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _rss_gib(proc.pid))
        if peak > cap_gib:
            proc.kill()
            proc.communicate()
            return {"killed": f"> {cap_gib:g} GiB", "wall": time.perf_counter() - t0}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {"failed": (err.strip().splitlines() or ["?"])[-1], "wall": time.perf_counter() - t0}
    return {**json.loads(lines[-1][7:]), "wall": time.perf_counter() - t0}


def _before_tree(ref: str, d: Path) -> Path:
    tar = subprocess.run(
        ["git", "archive", ref, "facecl"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(d)], input=tar.stdout, check=True)
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--n", type=int)
    ap.add_argument("--plots", action="store_true")
    ap.add_argument("--only", default="identify,blufr,pairs,merge")
    ap.add_argument("--sizes", nargs="*", default=[], help="kind=n1,n2 (overrides the default)")
    ap.add_argument("--before", default="", help="git ref of the code to compare with")
    ap.add_argument("--before-max", nargs="*", default=[], help="kind=n: largest size for REF")
    ap.add_argument("--cap-gib", type=float, default=12.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.n, args.plots)
    sizes = dict(DEFAULT_SIZES)
    for s in args.sizes:
        k, v = s.split("=")
        sizes[k] = [int(x) for x in v.split(",")]
    before_max = {k: int(v) for k, v in (s.split("=") for s in args.before_max)}
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, numpy {np.__version__}")
    print("| stage | size | code | time (s) | peak RSS (GiB) | RSS before (GiB) | result |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        trees: list[tuple[str, Path | None]] = [("this", None)]
        if args.before:
            trees.append((args.before, _before_tree(args.before, Path(d))))
        for kind in args.only.split(","):
            plots = kind.endswith("+plots")
            kind = kind.removesuffix("+plots")
            for n in sizes[kind]:
                for name, src in trees:
                    if src is not None and n > before_max.get(kind, 1 << 62):
                        continue
                    r = measure(kind, n, plots, src, args.cap_gib)
                    r.update(kind=kind + ("+plots" if plots else ""), n=n, code=name)
                    if args.out:
                        with open(args.out, "a") as f:
                            f.write(json.dumps(r) + "\n")
                    bad = r.get("killed") or r.get("failed")
                    rest = {
                        k: v
                        for k, v in r.items()
                        if k
                        not in (
                            "seconds",
                            "peak_rss_gib",
                            "wall",
                            "kind",
                            "n",
                            "code",
                            "start_rss_gib",
                        )
                    }
                    t = f"{r['seconds']:.1f}" if "seconds" in r else "-"
                    rss = f"{r['peak_rss_gib']:.2f}" if "peak_rss_gib" in r else (bad or "-")
                    pre = f"{r['rss_before_gib']:.2f}" if "rss_before_gib" in r else "-"
                    cells = [r["kind"], f"{n:,}", name, t, rss, pre, json.dumps(rest)]
                    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
