"""identify's gallery search: facecl's torch matmul + topk blocks against faiss (issue 17).

    .venv/bin/python benchmarks/bench_identify_faiss.py [--gallery 100000] [--probes 10000]
        [--out rows.jsonl]

faiss-cpu is not a facecl dependency; this benchmark needs it installed by hand
(``pip install faiss-cpu``). Each method runs in a fresh worker subprocess (this script with
``--worker``) on the same synthetic data as ``bench_scale_verify.py``'s identify (one 512-d
gallery image per identity; half the probes a gallery vector plus noise, half new
identities) and reports wall time, CPU seconds and peak RSS of the search alone (the RSS
of the data before it is given too):

* ``facecl``: :func:`facecl.verify.streaming.probe_stats` (rank exact up to 20, the best
  genuine and impostor score of every probe), what ``facecl verify --protocol identify``
  runs.
* ``faiss``: ``IndexFlatIP`` (exact inner product on unit vectors) filled with the gallery,
  then ``search(probes, 21)``; ranks, best genuine and impostor scores read from the top 21.
  The index holds its own copy of the gallery.

Both must give every probe the same rank (up to 20), which the ``check`` line reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale_verify import _randn, _rss_gib  # noqa: E402

K = 20


def _data(n: int, n_p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gallery + probes) unit vectors (n + n_p, 512), gallery labels, probe labels."""
    rng = np.random.default_rng(0)
    x = _randn(rng, n + n_p)
    gen_ids = rng.integers(0, n, n_p // 2)
    x[n : n + n_p // 2] = x[gen_ids] + 3.0 * _randn(rng, n_p // 2)
    for i in range(0, len(x), 65536):
        b = x[i : i + 65536]
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    p_lab = np.r_[gen_ids, n + np.arange(n_p - n_p // 2)]
    return x, np.arange(n), p_lab


def run_facecl(x: np.ndarray, n: int, g_lab: np.ndarray, p_lab: np.ndarray) -> np.ndarray:
    from facecl.verify import streaming as S

    sets = S.GalleryProbes(x, np.arange(n), np.arange(n, len(x)), g_lab, p_lab)
    return S.probe_stats(sets, "cosine", K).rank


def run_faiss(x: np.ndarray, n: int, g_lab: np.ndarray, p_lab: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x[:n])
    _, ids = index.search(x[n:], K + 1)  # (P, K + 1) gallery rows, best first
    hit = g_lab[np.maximum(ids, 0)] == p_lab[:, None]
    first = np.where(hit.any(1), hit.argmax(1), K)  # 0-based place of the genuine entry
    return first + 1  # rank; K + 1 when beyond the kept K (as probe_stats caps it)


def worker(method: str, n: int, n_p: int) -> None:
    x, g_lab, p_lab = _data(n, n_p)
    import torch  # imported before the clock in both workers: facecl needs it anyway

    torch.set_num_threads(os.cpu_count() or 1)
    rss0 = _rss_gib(os.getpid())
    c0, t0 = time.process_time(), time.perf_counter()
    rank = {"facecl": run_facecl, "faiss": run_faiss}[method](x, n, g_lab, p_lab)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    is_gen = p_lab < n
    out = {
        "method": method,
        "gallery": n,
        "probes": n_p,
        "seconds": wall,
        "cpu_s": cpu,
        "rss_before_gib": rss0,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rank1": float((rank[is_gen] == 1).mean()),
        "rank_sha1": hashlib.sha1(np.minimum(rank, K + 1).astype(np.int64).tobytes()).hexdigest(),
    }
    print("RESULT " + json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--probes", type=int, default=10_000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.gallery, args.probes)
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    rows = []
    for method in ("facecl", "faiss"):
        cmd = [sys.executable, __file__, "--worker", method, "--gallery", str(args.gallery),
               "--probes", str(args.probes)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
        if res.returncode or not line:
            print(method, "failed:", (res.stderr.strip().splitlines() or ["?"])[-1])
            continue
        row = json.loads(line[-1][7:])
        row["load"] = os.getloadavg()[0]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    if len(rows) == 2:
        same = rows[0]["rank_sha1"] == rows[1]["rank_sha1"]
        print(f"check: the same rank (1..{K}, or beyond) for every probe: {same}")


if __name__ == "__main__":
    main()
