"""Run a protocol on embeddings: numbers for report.json and arrays for the plots.

Each ``evaluate_*`` returns an ``Evaluation``: a JSON-ready ``report`` (every number, what was
dropped and whether the result is comparable to the standard protocol), the curves the plots
and ``--compare`` need, and the list of skipped items for ``missing.csv``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from facecl.errors import InputError, UsageError
from facecl.registry import Registry
from facecl.verify import metrics as M
from facecl.verify import streaming as S
from facecl.verify.config import VerifyConfig
from facecl.verify.embeddings import Embeddings, stored_fusion
from facecl.verify.protocols import (
    LFW_VIEW1_TEST,
    LFW_VIEW1_TRAIN,
    LFW_VIEW2,
    BlufrConfig,
    BlufrTrial,
    PairList,
    ResolvedPairs,
    read_blufr_config,
    read_lfw_pairs,
    read_pairs_csv,
    resolve_pairs,
    select_images,
    stored_pairs,
)

Standard = tuple[bool, str]
"""(whether a pair list is the published protocol's, the protocol's name)."""
TrialHook = Callable[[int, int], None]
"""``on_trial(done, total)``: progress of a protocol with trials (BLUFR)."""


@dataclass
class Evaluation:
    report: dict[str, Any]
    roc: dict[str, np.ndarray]  # far, tar (T,): the verification ROC (or DIR-vs-FAR)
    hist: dict[str, np.ndarray] | None = None  # edges (B+1,), genuine, impostor (B,)
    veri_curve: dict[str, np.ndarray] | None = None  # BLUFR: far, mean, std (F,)
    dir_curve: dict[str, np.ndarray] | None = None  # far, mean, std (F,)
    scores: dict[str, np.ndarray] | None = None  # pair protocols: score, same, fold (N,)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # item, kind, reason


def _far_name(far: float) -> str:
    return f"{far:g}"


def hist_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """(B+1,) shared histogram edges from the lowest to the highest score."""
    return np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)


def histogram(genuine: np.ndarray, impostor: np.ndarray, bins: int) -> dict[str, np.ndarray]:
    """Counts of genuine and impostor scores on shared edges (B+1,)."""
    lo = float(min(genuine.min(), impostor.min()))
    hi = float(max(genuine.max(), impostor.max()))
    edges = hist_edges(lo, hi, bins)
    return {
        "edges": edges,
        "genuine": np.histogram(genuine, edges)[0],
        "impostor": np.histogram(impostor, edges)[0],
    }


def _operating_points(gen: np.ndarray, imp: np.ndarray, fars) -> list[dict[str, float]]:
    pts = M.far_thresholds(gen, imp, fars)
    return [
        {
            "far": float(f),
            "tar": float(r),
            "threshold": float(t),
            "achieved_far": float(a),
        }
        for f, r, t, a in zip(
            pts.target_far, pts.rate, pts.threshold, pts.achieved_far, strict=True
        )
    ]


def _dropped_items(res: ResolvedPairs, label: str = "") -> list[dict[str, Any]]:
    rows = []
    for d in res.dropped:
        why = "; ".join(f"{k}: {v}" for k, v in d["missing"].items())
        rows.append({"item": f"{label}{d['a']} ~ {d['b']}", "kind": "pair", "reason": why})
    return rows


def _pairs_scores(
    emb: Embeddings, ia: np.ndarray, ib: np.ndarray, metric: str, pca: M.Pca | None
) -> np.ndarray:
    """Scores of the pairs (ia[i], ib[i]), gathered a block at a time."""
    return M.pair_scores_at(emb.vectors, ia, ib, metric, pca.transform if pca else None)


def _check_pca(cfg: VerifyConfig, emb: Embeddings, n_train_images: int) -> None:
    if cfg.pca_dim and cfg.pca_dim > min(emb.dim, n_train_images):
        raise UsageError(
            f"--pca {cfg.pca_dim} exceeds the embedding dimension ({emb.dim}) or the "
            f"number of training images ({n_train_images})",
            "choose a smaller --pca",
        )


def _verification_numbers(
    score: np.ndarray, same: np.ndarray, cfg: VerifyConfig
) -> tuple[dict[str, Any], M.Roc]:
    roc = M.roc_curve(score, same)
    e, e_thr = M.eer(roc)
    best = M.best_threshold(score, same)
    out = {
        "auc": M.auc(roc),
        "eer": e,
        "eer_threshold": e_thr,
        "best_threshold_accuracy": {"accuracy": best.accuracy, "threshold": best.threshold},
        "tar_at_far": _operating_points(score[same], score[~same], cfg.far_targets),
    }
    return out, roc


def _test_pairs(
    emb: Embeddings, pairs: PairList
) -> tuple[ResolvedPairs, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scorable pairs of ``pairs``: (resolved, idx_a, idx_b, same, fold) of the kept ones;
    raises when none are left or only one kind is."""
    res = resolve_pairs(emb, pairs)
    keep = res.keep
    if keep.sum() == 0:
        raise InputError(
            f"none of the {len(pairs)} pairs in {pairs.source} has both embeddings",
            "check that the embeddings were computed on the images the pairs name",
        )
    ia, ib = res.idx_a[keep], res.idx_b[keep]
    same, fold = pairs.same[keep], pairs.fold[keep]
    if same.all() or not same.any():
        raise InputError(
            f"after dropping missing images {pairs.source} has only "
            f"{'genuine' if same.all() else 'impostor'} pairs",
            "verification needs both same and different pairs",
        )
    return res, ia, ib, same, fold


def _score_split(
    emb: Embeddings,
    ia: np.ndarray,
    ib: np.ndarray,
    same: np.ndarray,
    train_pairs: PairList,
    train_res: ResolvedPairs,
    cfg: VerifyConfig,
) -> tuple[np.ndarray, dict[str, Any]]:
    """View 1: the threshold (and ``--pca``) fitted on the training pairs, applied to the test
    pairs. Returns the test scores and the accuracy record."""
    tk = train_res.keep
    ta, tb, tsame = train_res.idx_a[tk], train_res.idx_b[tk], train_pairs.same[tk]
    pca = None
    if cfg.pca_dim:
        rows = np.unique(np.r_[ta, tb])
        _check_pca(cfg, emb, len(rows))
        pca = M.fit_pca(emb.vectors[rows], cfg.pca_dim)
    tscore = _pairs_scores(emb, ta, tb, cfg.metric, pca)
    score = _pairs_scores(emb, ia, ib, cfg.metric, pca)
    t = M.best_threshold(tscore, tsame)
    acc = M.accuracy_at(score, same, t.threshold)
    return score, {
        "mean": acc,
        "std": None,  # one split: no spread to report
        "threshold": t.threshold,
        "train_accuracy": t.accuracy,
        "n_train_pairs": int(tk.sum()),
    }


def _pca_held_out_scores(
    emb: Embeddings,
    ia: np.ndarray,
    ib: np.ndarray,
    same: np.ndarray,
    fold: np.ndarray,
    cfg: VerifyConfig,
) -> tuple[np.ndarray, M.KFold]:
    """k-fold with ``--pca`` fitted per fold on the other folds' images."""
    train_rows = min(len(np.unique(np.r_[ia[fold != k], ib[fold != k]])) for k in np.unique(fold))
    _check_pca(cfg, emb, train_rows)
    per_fold = M.pca_fold_scores(emb.vectors, ia, ib, fold, cfg.metric, cfg.pca_dim)
    kf = M.kfold_accuracy(per_fold, same, fold)
    # Each pair scored by the projection fitted without its fold (held-out scores).
    score = np.empty(len(same))
    for j, k in enumerate(np.unique(fold)):
        score[fold == k] = per_fold[j][fold == k]
    return score, kf


def _score_folds(
    emb: Embeddings,
    ia: np.ndarray,
    ib: np.ndarray,
    same: np.ndarray,
    fold: np.ndarray,
    cfg: VerifyConfig,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """k-fold accuracy over ``fold`` (the threshold of each fold chosen on the others); a
    single fold has no accuracy (None). Returns the scores and the accuracy record."""
    if len(np.unique(fold)) < 2:
        if cfg.pca_dim:
            raise UsageError(
                "--pca needs a training split, and this pair list has a single fold",
                "add more pairs of each kind, or drop --pca",
            )
        return _pairs_scores(emb, ia, ib, cfg.metric, None), None
    if cfg.pca_dim:
        score, kf = _pca_held_out_scores(emb, ia, ib, same, fold, cfg)
    else:
        score = _pairs_scores(emb, ia, ib, cfg.metric, None)
        kf = M.kfold_accuracy(score, same, fold)
    return score, {
        "mean": kf.mean,
        "std": kf.std,  # ddof 0 over the folds
        "std_ddof": 0,
        "sample_std": kf.sample_std,  # ddof 1
        "standard_error": kf.standard_error,  # sample_std / sqrt(K), the LFW protocol's S_E
        "folds": kf.accuracy.tolist(),
        "thresholds": kf.threshold.tolist(),
        "train_accuracy": kf.train_accuracy.tolist(),
        "fold_sizes": [int((fold == k).sum()) for k in np.unique(fold)],
    }


def evaluate_pairs(
    emb: Embeddings,
    pairs: PairList,
    cfg: VerifyConfig,
    train_pairs: PairList | None = None,
    standard: Standard | None = None,
) -> Evaluation:
    """k-fold over ``pairs.fold`` (lfw-pairs, pairs) or one split with the threshold chosen on
    ``train_pairs`` (lfw-view1). ``standard``: whether the lists are the published protocol's,
    and its name (None: a user list, no standard to compare with)."""
    res, ia, ib, same, fold = _test_pairs(emb, pairs)
    skipped = _dropped_items(res)
    train_res: ResolvedPairs | None = None
    accuracy: dict[str, Any] | None
    if train_pairs is not None:  # View 1: one split, threshold on the training pairs
        train_res = resolve_pairs(emb, train_pairs)
        skipped += _dropped_items(train_res, "train: ")
        score, accuracy = _score_split(emb, ia, ib, same, train_pairs, train_res, cfg)
    else:
        score, accuracy = _score_folds(emb, ia, ib, same, fold, cfg)
    comparable, note = _pairs_comparability(standard, res, train_res)
    return _pairs_evaluation(
        _Scored(score, same, fold, accuracy),
        cfg,
        (comparable, note),
        _pairs_missing(pairs, res, train_res),
        skipped,
    )


@dataclass(frozen=True)
class _Scored:
    """The scored pairs of a pair protocol: score, same, fold (N,) and the accuracy record."""

    score: np.ndarray
    same: np.ndarray
    fold: np.ndarray
    accuracy: dict[str, Any] | None


def _pairs_evaluation(
    scored: _Scored,
    cfg: VerifyConfig,
    comparability: tuple[bool | None, str],
    missing: dict[str, Any],
    skipped: list[dict[str, Any]],
) -> Evaluation:
    """The Evaluation of a pair protocol: its accuracy record plus AUC, EER and TAR@FAR."""
    score, same = scored.score, scored.same
    numbers, roc = _verification_numbers(score, same, cfg)
    results: dict[str, Any] = {
        "accuracy": scored.accuracy,
        **numbers,
        "n_pairs": int(len(same)),
        "n_genuine": int(same.sum()),
        "n_impostor": int((~same).sum()),
    }
    report = {
        "results": results,
        "summary": _pair_summary(results, cfg),
        "comparable": comparability[0],
        "comparability": comparability[1],
        "missing": missing,
    }
    return Evaluation(
        report=report,
        roc={"far": roc.far, "tar": roc.tar, "thresholds": roc.thresholds},
        hist=histogram(score[same], score[~same], cfg.hist_bins),
        scores={"score": score, "same": same, "fold": scored.fold},
        skipped=skipped,
    )


# --------------------------------------------------------------------------- .bin sets


def _bin_comparability(fusion: str | None, res: ResolvedPairs, folds: int) -> Standard:
    reasons = []
    if fusion != "sum":
        reasons.append(
            f"fusion is {fusion or 'unknown'}: insightface sums image and flip features "
            "(verify or embed with --fusion sum to compare one for one)"
        )
    if res.dropped:
        reasons.append(f"{len(res.dropped)} pair(s) dropped for missing embeddings")
    if folds != 10:
        reasons.append(f"{folds} folds instead of 10")
    if reasons:
        return False, "NOT comparable to insightface's numbers: " + "; ".join(reasons)
    return True, "comparable to insightface's verification.py: sum fusion, 10 folds, every pair"


def evaluate_bin(emb: Embeddings, cfg: VerifyConfig) -> Evaluation:
    """insightface's protocol on the pairs stored from a ``.bin``: contiguous folds in file
    order, the accuracy threshold chosen on the other folds from insightface's grid on the
    squared distance of unit vectors (:func:`metrics.insightface_kfold`), population std;
    AUC, EER and TAR@FAR from all pairs with ``--metric``."""
    pairs = stored_pairs(emb, cfg.folds)
    res, ia, ib, same, fold = _test_pairs(emb, pairs)
    kf = M.insightface_kfold(emb.vectors[ia], emb.vectors[ib], same, fold)
    folds = np.asarray(kf.accuracy, dtype=np.float64)
    sample_std = float(folds.std(ddof=1)) if len(folds) > 1 else 0.0
    accuracy: dict[str, Any] = {
        "mean": kf.mean,
        "std": kf.std,  # ddof 0, as insightface reports it
        "std_ddof": 0,
        "sample_std": sample_std,  # ddof 1
        "standard_error": sample_std / float(np.sqrt(len(folds))),  # the LFW protocol's S_E
        "folds": kf.accuracy.tolist(),
        "distance_thresholds": kf.threshold.tolist(),
        "train_accuracy": kf.train_accuracy.tolist(),
        "fold_sizes": [int((fold == k).sum()) for k in np.unique(fold)],
        "rule": "same if |a/|a| - b/|b||^2 < t, t in 0..3.99 step 0.01 (insightface)",
    }
    if cfg.metric == "cosine":  # the same decisions on the cosine score: cos > 1 - t/2
        accuracy["thresholds"] = (1.0 - kf.threshold / 2.0).tolist()
    fusion = stored_fusion(emb) if cfg.fusion == "stored" else cfg.fusion
    comparable, note = _bin_comparability(fusion, res, cfg.folds)
    missing = {**_pairs_missing(pairs, res, None), "fusion": fusion}
    score = _pairs_scores(emb, ia, ib, cfg.metric, None)
    scored = _Scored(score, same, fold, accuracy)
    return _pairs_evaluation(scored, cfg, (comparable, note), missing, _dropped_items(res))


def _pairs_missing(
    pairs: PairList, res: ResolvedPairs, train_res: ResolvedPairs | None
) -> dict[str, Any]:
    """The report's ``missing`` record: what was dropped from the test (and training) pairs."""
    return {
        "n_pairs_total": len(pairs),
        "n_pairs_dropped": len(res.dropped),
        "n_train_pairs_dropped": int((~train_res.keep).sum()) if train_res else 0,
        "images": {**res.missing_images, **(train_res.missing_images if train_res else {})},
        "pairs_dropped": res.dropped + (train_res.dropped if train_res else []),
    }


def _pair_summary(results: dict[str, Any], cfg: VerifyConfig) -> dict[str, float]:
    s: dict[str, float] = {}
    if results.get("accuracy"):
        s["accuracy"] = results["accuracy"]["mean"]
        if results["accuracy"]["std"] is not None:
            s["accuracy_std_ddof0"] = results["accuracy"]["std"]  # over the folds
            # the LFW protocol's S_E: sample std (ddof 1) / sqrt(K)
            s["accuracy_se_ddof1"] = results["accuracy"]["standard_error"]
    s["best_threshold_accuracy"] = results["best_threshold_accuracy"]["accuracy"]
    s["auc"] = results["auc"]
    s["eer"] = results["eer"]
    for p in results["tar_at_far"]:
        s[f"tar@far={_far_name(p['far'])}"] = p["tar"]
    return s


def _pairs_comparability(
    standard: Standard | None, res: ResolvedPairs, train_res: ResolvedPairs | None
) -> tuple[bool | None, str]:
    dropped = len(res.dropped) + (len(train_res.dropped) if train_res else 0)
    if standard is None:
        if dropped:
            return None, f"user pair list; {dropped} pair(s) dropped for missing embeddings"
        return None, "user pair list (no standard to compare with); every pair was scored"
    is_standard, what = standard
    reasons = []
    if not is_standard:
        reasons.append(f"the pair list is not the standard {what}")
    if dropped:
        reasons.append(f"{dropped} pair(s) were dropped for missing embeddings")
    if reasons:
        return False, "NOT comparable to published results: " + "; ".join(reasons)
    return True, f"comparable: the standard {what}, every pair scored"


# --------------------------------------------------------------------------- BLUFR


@dataclass(frozen=True)
class _BlufrFars:
    """The FAR grids of a BLUFR run and the index of the reported point on each."""

    veri: np.ndarray  # (F,) verification FARs: the benchmark's plus --blufr-veri-far
    osi: np.ndarray  # (F',) open-set FARs: the benchmark's plus --osi-far
    vi: int  # index of --blufr-veri-far in veri
    oi: int  # index of --osi-far in osi

    @classmethod
    def of(cls, cfg: VerifyConfig) -> _BlufrFars:
        veri = np.unique(np.r_[M.BLUFR_VERI_FARS, cfg.blufr_veri_far])
        osi = np.unique(np.r_[M.BLUFR_OSI_FARS, cfg.osi_far])
        vi = int(np.flatnonzero(veri == cfg.blufr_veri_far)[0])
        oi = int(np.flatnonzero(osi == cfg.osi_far)[0])
        return cls(veri, osi, vi, oi)


@dataclass
class _TrialResult:
    vr: np.ndarray  # (F,) verification rate at each of fars.veri
    dir: np.ndarray  # (F',) detection and identification rate at each of fars.osi
    record: dict[str, Any]  # the trial's entry in results["trials"]
    hist: dict[str, np.ndarray] | None  # score histogram (asked for on the first trial)


def _blufr_rows(
    emb: Embeddings, config: BlufrConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Embedding row of each BLUFR image, whether it is usable, and why the others are not."""
    rows = np.array([emb.find(k) for k in config.keys], dtype=np.int64)
    usable = (rows >= 0) & emb.ok[np.maximum(rows, 0)]
    missing_images = {config.keys[i]: emb.reason(int(rows[i])) for i in np.flatnonzero(~usable)}
    if usable.sum() == 0:
        raise InputError(
            "none of the BLUFR images has an embedding",
            "embed the LFW images (keys <Name>/<Name>_<NNNN>) and try again",
        )
    return rows, usable, missing_images


def _blufr_trial(
    t: int,
    trial: BlufrTrial,
    emb: Embeddings,
    rows: np.ndarray,
    usable: np.ndarray,
    labels: np.ndarray,
    fars: _BlufrFars,
    cfg: VerifyConfig,
) -> _TrialResult:
    """One BLUFR trial ``t`` (0-based): VR at FAR over all test pairs, then open-set DIR of
    the probes against the gallery, on the trial's images that have an embedding."""
    test = trial.test[usable[trial.test]]
    gal = trial.gallery[usable[trial.gallery]]
    probe = trial.probe[usable[trial.probe]]
    vectors, at = emb.vectors, rows  # image i of the config is row at[i] of vectors
    if cfg.pca_dim:
        train = trial.train[usable[trial.train]]
        _check_pca(cfg, emb, len(train))
        pca = M.fit_pca(emb.vectors[rows[train]], cfg.pca_dim)
        vectors = pca.transform(emb.vectors[rows[test]]).astype(np.float32)  # (n, K)
        at = np.full(len(rows), -1, dtype=np.int64)
        at[test] = np.arange(len(test))
    pairs = S.all_pairs_stats(
        vectors,
        labels[test],
        cfg.metric,
        lambda n: M.far_ranks(fars.veri, n),
        bins=cfg.hist_bins if t == 0 else 0,
        rows=at[test],
    )  # never the N^2 / 2 scores: the genuine ones and exact impostor ranks
    gen, n_imp = pairs.genuine, pairs.impostor.n
    if len(gen) == 0 or n_imp == 0:
        raise InputError(
            f"BLUFR trial {t + 1} has no genuine or no impostor pairs left",
            "too many BLUFR images lack embeddings",
        )
    veri = M.far_thresholds(gen, pairs.impostor, fars.veri)
    hist = None
    if pairs.hist is not None:
        edges, hg, hi = pairs.hist
        hist = {"edges": edges, "genuine": hg, "impostor": hi}
    sets = S.GalleryProbes(vectors, at[gal], at[probe], labels[gal], labels[probe])
    osr, _ = _open_set_rates(sets, fars.osi, cfg)
    if osr is None:
        raise InputError(
            f"BLUFR trial {t + 1} has no genuine or no impostor probes left",
            "too many BLUFR images lack embeddings",
        )
    vi, oi = fars.vi, fars.oi
    record = {
        "trial": t + 1,
        "n_test": int(len(test)),
        "n_test_missing": int(len(trial.test) - len(test)),
        "n_genuine_pairs": int(len(gen)),
        "n_impostor_pairs": n_imp,
        "vr": float(veri.rate[vi]),
        "vr_threshold": float(veri.threshold[vi]),
        "vr_achieved_far": float(veri.achieved_far[vi]),
        "n_gallery": int(len(gal)),
        "n_genuine_probes": int(len(osr.probe_ranks)),
        "n_impostor_probes": int(len(osr.impostor_scores)),
        "dir": float(osr.dir[0, oi]),
        "dir_threshold": float(osr.thresholds[oi]),
        "dir_achieved_far": float(osr.achieved_far[oi]),
        "closed_set_rank1": osr.cmc(1),
    }
    return _TrialResult(veri.rate, osr.dir[0], record, hist)


def _blufr_comparability(
    missing_images: dict[str, str], n_missing_test: int, n_trials: int
) -> tuple[bool, str]:
    if missing_images and n_missing_test:
        return False, (
            f"NOT comparable to published BLUFR results: {len(missing_images)} image(s) of the "
            f"BLUFR list have no embedding ({n_missing_test} test-set removals over "
            f"{n_trials} trials)"
        )
    if n_trials != 10:
        return False, f"NOT comparable: {n_trials} trials instead of 10"
    return True, "comparable: all 10 BLUFR trials, every test image scored"


def _spread(rates: np.ndarray) -> list[float]:
    """Per-FAR standard deviation over trials (ddof 1; zeros for a single trial)."""
    return rates.std(0, ddof=1).tolist() if len(rates) > 1 else [0.0] * rates.shape[1]


def _blufr_results(
    trials_out: list[dict[str, Any]],
    vr: np.ndarray,
    dirs: np.ndarray,
    fars: _BlufrFars,
    cfg: VerifyConfig,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The report's ``results`` (per trial, mean/std at the reported FARs, curves) and
    ``summary``."""
    vr_stats = M.mean_std(vr[:, fars.vi])
    dir_stats = M.mean_std(dirs[:, fars.oi])
    vname = f"vr@far={_far_name(cfg.blufr_veri_far)}"
    dname = f"dir@far={_far_name(cfg.osi_far)},rank={cfg.rank}"
    results = {
        "trials": trials_out,
        vname: vr_stats,
        dname: dir_stats,
        "std_ddof": 1,
        "curves": {
            "veri_far": fars.veri.tolist(),
            "vr_mean": vr.mean(0).tolist(),
            "vr_std": _spread(vr),
            "osi_far": fars.osi.tolist(),
            "dir_mean": dirs.mean(0).tolist(),
            "dir_std": _spread(dirs),
        },
    }
    summary = {
        f"{vname} (mean-std)": vr_stats["mean_minus_std"],
        f"{vname} mean": vr_stats["mean"],
        f"{vname} std": vr_stats["std"],
        f"{dname} (mean-std)": dir_stats["mean_minus_std"],
        f"{dname} mean": dir_stats["mean"],
        f"{dname} std": dir_stats["std"],
    }
    return results, summary


def evaluate_blufr(
    emb: Embeddings,
    config: BlufrConfig,
    cfg: VerifyConfig,
    on_trial: Callable[[int], None] | None = None,
) -> Evaluation:
    """The BLUFR LFW benchmark: per trial VR at FAR on all test pairs, open-set DIR at FAR.

    Images of the BLUFR list without a usable embedding are removed from each trial's test,
    gallery and probe sets (and reported); any such removal makes the result not comparable.
    """
    rows, usable, missing_images = _blufr_rows(emb, config)
    fars = _BlufrFars.of(cfg)
    vr = np.zeros((len(config.trials), len(fars.veri)))
    dirs = np.zeros((len(config.trials), len(fars.osi)))
    trials_out = []
    hist = None
    for t, trial in enumerate(config.trials):
        tr = _blufr_trial(t, trial, emb, rows, usable, config.labels, fars, cfg)
        vr[t], dirs[t] = tr.vr, tr.dir
        trials_out.append(tr.record)
        if t == 0:
            hist = tr.hist
        if on_trial:
            on_trial(t)
    results, summary = _blufr_results(trials_out, vr, dirs, fars, cfg)
    n_missing_test = sum(tr["n_test_missing"] for tr in trials_out)
    comparable, note = _blufr_comparability(missing_images, n_missing_test, len(config.trials))
    report = {
        "results": results,
        "summary": summary,
        "comparable": comparable,
        "comparability": note,
        "missing": {
            "images": missing_images,
            "n_images_missing": len(missing_images),
            "n_test_removals": n_missing_test,
        },
    }
    curves = cast(dict[str, Any], results["curves"])
    return Evaluation(
        report=report,
        roc={"far": fars.veri[fars.veri > 0], "tar": vr.mean(0)[fars.veri > 0]},
        hist=hist,
        veri_curve={
            "far": fars.veri,
            "mean": np.array(curves["vr_mean"]),
            "std": np.array(curves["vr_std"]),
        },
        dir_curve={
            "far": fars.osi,
            "mean": np.array(curves["dir_mean"]),
            "std": np.array(curves["dir_std"]),
        },
        skipped=[{"item": k, "kind": "image", "reason": r} for k, r in missing_images.items()],
    )


# --------------------------------------------------------------------------- identify


def _identify_sets(
    emb: Embeddings, gallery: str, probe: str
) -> tuple[np.ndarray, np.ndarray, dict[str, str], dict[str, str], list[dict[str, Any]]]:
    """Gallery rows, probe rows (those not also in the gallery), the gallery's and the
    probes' listed images without an embedding, and the skipped items; raises when either set
    ends up empty."""
    g_rows, g_missing, g_notes = select_images(emb, gallery)
    p_rows, p_missing, p_notes = select_images(emb, probe)
    skipped = [
        {"item": k, "kind": f"{what} image", "reason": r}
        for what, miss in (("gallery", g_missing), ("probe", p_missing))
        for k, r in miss.items()
    ]
    skipped += [
        {"item": where, "kind": f"{what} folder", "reason": f"ignored_hidden: {n} files"}
        for what, where, notes in (("gallery", gallery, g_notes), ("probe", probe, p_notes))
        if (n := notes.get("ignored_hidden", 0))
    ]
    in_gallery = np.isin(p_rows, g_rows)
    for r in p_rows[in_gallery]:
        skipped.append({"item": emb.keys[r], "kind": "probe image", "reason": "also in gallery"})
    p_rows = p_rows[~in_gallery]
    if len(g_rows) == 0 or len(p_rows) == 0:
        raise InputError(
            f"identification needs a gallery and probes with embeddings "
            f"(gallery: {len(g_rows)}, probes: {len(p_rows)})",
            "check --gallery and --probe against the embedded images",
        )
    return g_rows, p_rows, g_missing, p_missing, skipped


def _open_set_rates(
    sets: S.GalleryProbes, fars: np.ndarray, cfg: VerifyConfig, max_rank: int = 1
) -> tuple[M.OpenSet | None, S.ProbeStats]:
    """Open-set DIR at ``fars`` and rank ``cfg.rank`` of the probes against the gallery,
    gallery block by block (None without genuine and impostor probes); and the probes'
    statistics (ranks exact up to ``max(max_rank, cfg.rank)``)."""
    st = S.probe_stats(sets, cfg.metric, max(max_rank, cfg.rank))
    is_gen = np.isin(sets.p_labels, sets.g_labels)
    if is_gen.all() or not is_gen.any():
        return None, st
    gen, rank, imp = st.genuine[is_gen], st.rank[is_gen], st.impostor[~is_gen]
    return M.open_set_rates(gen, rank, imp, fars, ranks=(cfg.rank,)), st


def _open_set(
    osr: M.OpenSet, osi_fars: np.ndarray, cfg: VerifyConfig
) -> tuple[dict[str, Any], str, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The report's ``open_set`` record of ``osr`` (at ``osi_fars``), its DIR name, the
    DIR-vs-FAR curve for the ROC plot and the DIR curve."""
    oi = int(np.flatnonzero(osi_fars == cfg.osi_far)[0])
    dname = f"dir@far={_far_name(cfg.osi_far)},rank={cfg.rank}"
    record = {
        dname: float(osr.dir[0, oi]),
        "threshold": float(osr.thresholds[oi]),
        "achieved_far": float(osr.achieved_far[oi]),
        "far": osi_fars.tolist(),
        "dir": osr.dir[0].tolist(),
    }
    roc = {"far": osi_fars[osi_fars > 0], "tar": osr.dir[0][osi_fars > 0]}
    dir_curve = {"far": osi_fars, "mean": osr.dir[0], "std": np.zeros(len(osi_fars))}
    return record, dname, roc, dir_curve


def _identify_hist(
    sets: S.GalleryProbes, st: S.ProbeStats, cfg: VerifyConfig
) -> dict[str, np.ndarray] | None:
    """Genuine and impostor gallery x probe score histograms: a second pass over the gallery,
    made only for the plot (none with ``--no-plots``, or without any impostor pair)."""
    if not cfg.plots or len(np.unique(np.r_[sets.g_labels, sets.p_labels])) < 2:
        return None
    edges = hist_edges(st.lo, st.hi, cfg.hist_bins)
    gen, imp = S.probe_histogram(sets, cfg.metric, edges)
    return {"edges": edges, "genuine": gen, "impostor": imp}


def evaluate_identify(emb: Embeddings, gallery: str, probe: str, cfg: VerifyConfig) -> Evaluation:
    """Closed-set CMC on the probes whose identity is in the gallery; open-set DIR at FAR
    when there are probes of identities outside the gallery too."""
    g_rows, p_rows, g_missing, p_missing, skipped = _identify_sets(emb, gallery, probe)
    gl, pl = emb.identities.take(g_rows), emb.identities.take(p_rows)
    is_gen = np.isin(pl, gl)
    if not is_gen.any():
        raise InputError(
            "no probe identity is in the gallery", "the gallery must hold the probes' identities"
        )
    osi_fars = np.unique(np.r_[M.BLUFR_OSI_FARS, cfg.osi_far])
    sets = S.GalleryProbes(emb.vectors, g_rows, p_rows, gl, pl)
    osr, st = _open_set_rates(sets, osi_fars, cfg, 20)
    granks = st.rank[is_gen]  # exact up to rank max(20, --rank)
    max_rank = min(20, len(g_rows))
    cmc = [float((granks <= r).mean()) for r in range(1, max_rank + 1)]
    results: dict[str, Any] = {
        "n_gallery": int(len(g_rows)),
        "n_gallery_identities": int(len(np.unique(gl))),
        "n_genuine_probes": int(is_gen.sum()),
        "n_impostor_probes": int((~is_gen).sum()),
        "cmc": cmc,
        "rank1": cmc[0],
        "rank5": cmc[min(4, max_rank - 1)],
    }
    summary = {"closed_set_rank1": cmc[0], "closed_set_rank5": results["rank5"]}
    roc = {"far": np.zeros(0), "tar": np.zeros(0)}
    dir_curve = None
    results["open_set"] = None
    if osr is not None:
        results["open_set"], dname, roc, dir_curve = _open_set(osr, osi_fars, cfg)
        summary[dname] = results["open_set"][dname]
    n_missing = len(g_missing) + len(p_missing)
    note = "user gallery/probe sets (no standard to compare with); " + (
        f"{n_missing} listed image(s) had no embedding" if n_missing else "every image scored"
    )
    report = {
        "results": results,
        "summary": summary,
        "comparable": None,
        "comparability": note,
        "missing": {"images": {**g_missing, **p_missing}, "n_images_missing": n_missing},
    }
    return Evaluation(
        report=report,
        roc=roc,
        hist=_identify_hist(sets, st, cfg),
        dir_curve=dir_curve,
        skipped=skipped,
    )


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Protocol:
    """An evaluation protocol: the inputs it reads and how it scores them."""

    run: Callable[[Embeddings, Mapping[str, Path], VerifyConfig, TrialHook | None], Evaluation]
    """``run(embeddings, inputs by role, cfg, on_trial)``."""
    needs: tuple[str, ...]
    """Input roles it requires: ``pairs``, ``blufr_config``, ``gallery``, ``probe``."""
    train_pairs: bool = False
    """Chooses its threshold on a second pair list (``train_pairs``, default next to pairs)."""
    training_split: bool = True
    """Has a training part that ``--pca`` can be fitted on."""
    trials: bool = False
    """Reports progress per trial (``on_trial``)."""
    verification: bool = True
    """Scores pairs: ROC and DET plots."""
    rate_label: str = "TAR"
    """The y axis of the ROC plot."""
    dir_plot: str = "dir.png"
    """File name of the open-set identification plot (when there is one)."""
    hist_note: str = ""
    """Appended to the score histogram's title."""
    many_inputs: bool = False
    """Takes several embeddings in one call (one report each, one table)."""


PROTOCOLS: Registry[Protocol] = Registry("protocol")

VIEW2 = "LFW View 2 (10 folds x 600 pairs)"
VIEW1 = "LFW View 1 (threshold on 2x1100 DevTrain pairs, scored on 2x500 DevTest pairs)"


def _lfw_pairs(
    emb: Embeddings, inputs: Mapping[str, Path], cfg: VerifyConfig, _: Any
) -> Evaluation:
    pl = read_lfw_pairs(inputs["pairs"])
    if pl.n_folds < 2:
        raise UsageError(
            f"{inputs['pairs']} holds a single set of pairs (a View 1 file?)",
            "use --protocol lfw-view1 for pairsDevTest.txt, or pass View 2 pairs.txt",
        )
    return evaluate_pairs(emb, pl, cfg, standard=(pl.header == LFW_VIEW2, VIEW2))


def _lfw_view1(
    emb: Embeddings, inputs: Mapping[str, Path], cfg: VerifyConfig, _: Any
) -> Evaluation:
    pl, tl = read_lfw_pairs(inputs["pairs"]), read_lfw_pairs(inputs["train_pairs"])
    standard = pl.header == (LFW_VIEW1_TEST,) and tl.header == (LFW_VIEW1_TRAIN,)
    return evaluate_pairs(emb, pl, cfg, tl, standard=(standard, VIEW1))


def _pairs(emb: Embeddings, inputs: Mapping[str, Path], cfg: VerifyConfig, _: Any) -> Evaluation:
    return evaluate_pairs(emb, read_pairs_csv(inputs["pairs"], cfg.folds), cfg)


def _blufr(
    emb: Embeddings, inputs: Mapping[str, Path], cfg: VerifyConfig, on_trial: TrialHook | None
) -> Evaluation:
    conf = read_blufr_config(inputs["blufr_config"])
    n = len(conf.trials)
    return evaluate_blufr(emb, conf, cfg, (lambda t: on_trial(t + 1, n)) if on_trial else None)


def _bin(emb: Embeddings, inputs: Mapping[str, Path], cfg: VerifyConfig, _: Any) -> Evaluation:
    return evaluate_bin(emb, cfg)


def _identify(emb: Embeddings, inputs: Mapping[str, Path], cfg: VerifyConfig, _: Any) -> Evaluation:
    return evaluate_identify(emb, str(inputs["gallery"]), str(inputs["probe"]), cfg)


PROTOCOLS.register("lfw-pairs", Protocol(_lfw_pairs, ("pairs",)))
PROTOCOLS.register("lfw-view1", Protocol(_lfw_view1, ("pairs",), train_pairs=True))
PROTOCOLS.register("pairs", Protocol(_pairs, ("pairs",)))
PROTOCOLS.register("bin", Protocol(_bin, (), training_split=False, many_inputs=True))
PROTOCOLS.register(
    "blufr",
    Protocol(
        _blufr,
        ("blufr_config",),
        trials=True,
        rate_label="VR (mean over trials)",
        dir_plot="blufr_dir.png",
        hist_note=" (trial 1)",
    ),
)
PROTOCOLS.register(
    "identify",
    Protocol(_identify, ("gallery", "probe"), training_split=False, verification=False),
)
