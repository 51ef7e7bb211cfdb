"""Benchmark `facecl verify`: LFW 10-fold against insightface's threshold loop, and BLUFR.

    .venv/bin/python benchmarks/bench_verify.py [--shared ../shared/data] [--repeats 3]

1. LFW View 2 10-fold accuracy on 6,000 pairs. The reference is a faithful reimplementation
   of insightface ``recognition/arcface_torch/eval/verification.py::calculate_roc`` (squared
   L2 distance of normalised embeddings, ``np.arange(0, 4, 0.01)``, one pass over the
   thresholds per fold for the training accuracy and one for the test TPR/FPR), run side by
   side with facecl's vectorised code on the same embeddings in the same process:
   * facecl grid mode on the same 400 thresholds (score = -distance): accuracy must be
     identical fold by fold;
   * facecl exact mode (the default: every distinct training score is a candidate);
   * facecl's whole pair evaluation (k-fold + ROC + AUC + EER + TAR@FAR).
2. BLUFR (all 10 trials of ``blufr_lfw_config.mat``, ~10k test images each, ~50M impostor
   pairs per trial): ``facecl verify -p blufr`` end to end in a subprocess, wall time and
   peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``).

Embeddings are synthetic (identity centre + noise, 512-d) keyed by the real LFW names, so
accuracy numbers are not face-recognition results; only the timing and equality matter.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facecl.verify import metrics as M  # noqa: E402
from facecl.verify.protocols import read_blufr_config, read_lfw_pairs  # noqa: E402

# --------------------------------------------------------------------------- reference


def ref_calculate_accuracy(threshold, dist, actual_issame):
    predict_issame = np.less(dist, threshold)
    tp = np.sum(np.logical_and(predict_issame, actual_issame))
    fp = np.sum(np.logical_and(predict_issame, np.logical_not(actual_issame)))
    tn = np.sum(np.logical_and(np.logical_not(predict_issame), np.logical_not(actual_issame)))
    fn = np.sum(np.logical_and(np.logical_not(predict_issame), actual_issame))
    tpr = 0 if (tp + fn == 0) else float(tp) / float(tp + fn)
    fpr = 0 if (fp + tn == 0) else float(fp) / float(fp + tn)
    acc = float(tp + tn) / dist.size
    return tpr, fpr, acc


def ref_calculate_roc(thresholds, dist, actual_issame, nrof_folds=10):
    """insightface's loop on precomputed distances (its ``calculate_roc`` with pca=0 computes
    ``dist`` once up front, then runs this): KFold(10, shuffle=False) = 10 contiguous blocks."""
    n = len(actual_issame)
    tprs = np.zeros((nrof_folds, len(thresholds)))
    fprs = np.zeros((nrof_folds, len(thresholds)))
    accuracy = np.zeros(nrof_folds)
    for fold_idx, test_set in enumerate(np.array_split(np.arange(n), nrof_folds)):
        train_set = np.setdiff1d(np.arange(n), test_set)
        acc_train = np.zeros(len(thresholds))
        for i, t in enumerate(thresholds):
            _, _, acc_train[i] = ref_calculate_accuracy(
                t, dist[train_set], actual_issame[train_set]
            )
        best = np.argmax(acc_train)
        for i, t in enumerate(thresholds):
            tprs[fold_idx, i], fprs[fold_idx, i], _ = ref_calculate_accuracy(
                t, dist[test_set], actual_issame[test_set]
            )
        _, _, accuracy[fold_idx] = ref_calculate_accuracy(
            thresholds[best], dist[test_set], actual_issame[test_set]
        )
    return tprs.mean(0), fprs.mean(0), accuracy


# --------------------------------------------------------------------------- data


def identity_embeddings(keys, dim=512, noise=3.0, seed=0):
    rng = np.random.default_rng(seed)
    ids = sorted({k.split("/", 1)[0] for k in keys})
    centre = {i: rng.normal(size=dim) for i in ids}
    x = np.stack([centre[k.split("/", 1)[0]] + noise * rng.normal(size=dim) for k in keys])
    return x.astype(np.float32)


def best_of(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_lfw(shared: Path, repeats: int) -> list[str]:
    pl = read_lfw_pairs(shared / "lfw" / "pairs.txt")
    keys = sorted(set(pl.a) | set(pl.b))
    row = {k: i for i, k in enumerate(keys)}
    raw = identity_embeddings(keys)  # (M, 512) float32, as an embed artifact holds them
    e1 = raw[[row[k] for k in pl.a]]
    e2 = raw[[row[k] for k in pl.b]]
    same, folds = pl.same, pl.fold
    thresholds = np.arange(0, 4, 0.01)

    def ref_dist():  # insightface: normalised embeddings, squared L2 distance
        n1, n2 = M.l2_normalize(e1.astype(np.float64)), M.l2_normalize(e2.astype(np.float64))
        return np.sum(np.square(np.subtract(n1, n2)), 1)

    dist = ref_dist()
    score = M.pair_scores(e1, e2, "cosine")

    def full(s):
        kf = M.kfold_accuracy(s, same, folds)
        roc = M.roc_curve(s, same)
        M.auc(roc), M.eer(roc), M.far_thresholds(s[same], s[~same], [1e-3, 1e-2])
        return kf

    t_ref, (_, _, ref_acc) = best_of(lambda: ref_calculate_roc(thresholds, dist, same), repeats)
    t_grid, grid = best_of(lambda: M.kfold_accuracy(-dist, same, folds, grid=-thresholds), repeats)
    t_exact, exact = best_of(lambda: M.kfold_accuracy(score, same, folds), repeats)
    t_full, _ = best_of(lambda: full(score), repeats)
    t_ref_dist, _ = best_of(ref_dist, repeats)
    t_score, _ = best_of(lambda: M.pair_scores(e1, e2, "cosine"), repeats)
    identical = bool(np.array_equal(grid.accuracy, ref_acc))
    assert identical, (grid.accuracy, ref_acc)
    ms = 1e3
    return [
        "| LFW View 2, 6,000 pairs, 512-d, 10 folds | time | vs reference | accuracy |",
        "|---|---|---|---|",
        f"| reference: insightface `calculate_roc` threshold loop, `np.arange(0, 4, 0.01)` "
        f"| {t_ref * ms:.1f} ms | 1x | {ref_acc.mean():.4f} +- {ref_acc.std():.4f} |",
        f"| facecl `kfold_accuracy`, same 400-threshold grid | {t_grid * ms:.2f} ms "
        f"| {t_ref / t_grid:.0f}x | {grid.mean:.4f} +- {grid.std:.4f} "
        f"(identical in every fold: {identical}) |",
        f"| facecl `kfold_accuracy`, exact (every distinct score) | {t_exact * ms:.2f} ms "
        f"| {t_ref / t_exact:.0f}x | {exact.mean:.4f} +- {exact.std:.4f} |",
        f"| facecl k-fold + ROC + AUC + EER + TAR@FAR | {t_full * ms:.2f} ms "
        f"| {t_ref / t_full:.0f}x | - |",
        f"| with scoring from embeddings: reference (dist + loop) vs facecl (cosine + all) "
        f"| {(t_ref_dist + t_ref) * ms:.1f} vs {(t_score + t_full) * ms:.1f} ms "
        f"| {(t_ref_dist + t_ref) / (t_score + t_full):.0f}x | - |",
    ]


def bench_blufr(shared: Path, workdir: Path) -> list[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from verify.helpers import make_embed_artifact  # the embed contract, no embed code

    config = shared / "blufr" / "blufr_lfw_config.mat"
    conf = read_blufr_config(config)
    keys = conf.keys
    emb = make_embed_artifact(workdir, keys, identity_embeddings(keys, noise=3.0, seed=1))
    out = workdir / "blufr_report"
    cmd = [sys.executable, "-m", "facecl", "verify", str(emb), "-p", "blufr",
           "--config", str(config), "-o", str(out), "--json"]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    import json

    rep = json.loads((out / "report.json").read_text())
    n_test = [t["n_test"] for t in rep["results"]["trials"]]
    n_imp = [t["n_impostor_pairs"] for t in rep["results"]["trials"]]
    vr = rep["results"]["vr@far=0.001"]
    dr = rep["results"]["dir@far=0.01,rank=1"]
    return [
        "| BLUFR, 10 trials, 512-d | value |",
        "|---|---|",
        f"| test images per trial | {min(n_test):,} - {max(n_test):,} |",
        f"| impostor pairs per trial | {min(n_imp) / 1e6:.1f}M - {max(n_imp) / 1e6:.1f}M |",
        f"| total wall time (`facecl verify -p blufr`, end to end) | {wall:.1f} s |",
        f"| peak RSS of that process | {peak_kib / 2**20:.2f} GiB |",
        f"| VR@FAR=0.1% mean-std (synthetic) | {vr['mean_minus_std']:.4f} |",
        f"| DIR@FAR=1% rank 1 mean-std (synthetic) | {dr['mean_minus_std']:.4f} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-blufr", action="store_true")
    args = ap.parse_args()
    if not (args.shared / "lfw" / "pairs.txt").is_file():
        print(f"bench_verify: skipped, needs LFW pairs.txt and the BLUFR config in {args.shared}")
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}\n")
    print("\n".join(bench_lfw(args.shared, args.repeats)))
    if not args.skip_blufr:
        with tempfile.TemporaryDirectory() as d:
            print()
            print("\n".join(bench_blufr(args.shared, Path(d))))


if __name__ == "__main__":
    main()
