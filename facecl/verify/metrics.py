"""Verification and identification metrics: pure numpy, vectorised, exact.

Conventions used by every function here:

* A **score** is a similarity: higher means "more likely the same person" (cosine similarity,
  or the negative Euclidean distance).
* A pair is predicted **"same" when ``score >= threshold``**.
* Scores are sorted once and every threshold is evaluated at the same time with cumulative
  counts; nothing loops over thresholds.

Threshold selection for accuracy (LFW 10-fold, best-threshold accuracy), ``best_threshold``:
training accuracy only changes between two consecutive *distinct* training scores, so the
candidates are the cuts between them. Among cuts with the highest training accuracy the one
with the **lowest** threshold wins, and the threshold reported for an interior cut is the
**midpoint** of the two distinct scores around it (any value in between gives the same
training decisions; the midpoint leaves the largest margin to both). The two edge cuts use the
training extreme: "all same" is ``min(score)``, "all different" is the float just above
``max(score)``. With ``grid=`` the candidates are the grid values instead, and among equal
accuracies the first in grid order wins (this is how a grid search such as insightface's
``eval/verification.py`` breaks ties).

Operating points at a target FAR (``far_thresholds``) follow the BLUFR toolkit (Liao et al.
2014, ``EvalROC.m`` / ``OpenSetROC.m``): with ``I`` impostor scores the number of allowed false
accepts is ``k = round(far * I)`` (halves away from zero, like MATLAB); the threshold is the
``k``-th largest impostor score, so exactly ``k`` impostors are accepted when there are no
ties. ``k = 0`` puts the threshold halfway between the largest impostor score and the
smallest genuine score above it (or just above the largest impostor score when no genuine
score is above it); ``k = I`` accepts everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

METRICS = ("cosine", "euclidean")


# --------------------------------------------------------------------------- scoring


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length. x: (N, D) -> (N, D)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, eps)


def pair_scores(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Similarity of row i of ``a`` with row i of ``b``. a, b: (N, D) -> (N,) float64.

    ``cosine``: cosine similarity in [-1, 1]; ``euclidean``: minus the Euclidean distance of
    the raw (unnormalised) vectors.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if metric == "cosine":
        ab = np.einsum("nd,nd->n", a, b)
        norms = np.sqrt(np.einsum("nd,nd->n", a, a) * np.einsum("nd,nd->n", b, b))
        return ab / np.maximum(norms, 1e-24)
    if metric == "euclidean":
        d = a - b
        return -np.sqrt(np.einsum("nd,nd->n", d, d))
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


PAIR_BLOCK = 8192
"""Pairs scored per block by :func:`pair_scores_at` (two (block, D) float64 gathers)."""


def pair_scores_at(
    vectors: np.ndarray,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    metric: str = "cosine",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    block: int = PAIR_BLOCK,
) -> np.ndarray:
    """``pair_scores(vectors[idx_a], vectors[idx_b])`` (N,) float64, gathering (and, with
    ``transform``, e.g. a PCA, projecting) one block of pairs at a time: memory O(block x D)
    on top of ``vectors``, whatever N."""
    out = np.empty(len(idx_a), dtype=np.float64)
    for i in range(0, len(idx_a), block):
        a, b = vectors[idx_a[i : i + block]], vectors[idx_b[i : i + block]]
        if transform is not None:
            a, b = transform(a), transform(b)
        out[i : i + block] = pair_scores(a, b, metric)
    return out


# --------------------------------------------------------------------------- PCA


@dataclass(frozen=True)
class Pca:
    """mean: (D,); components: (D, K) with orthonormal columns, largest variance first."""

    mean: np.ndarray
    components: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, K)."""
        return (x - self.mean) @ self.components


def fit_pca(x: np.ndarray, dim: int) -> Pca:
    """PCA of the rows of x: (N, D), keeping ``dim`` components (eigh of the D x D covariance)."""
    x = np.asarray(x, dtype=np.float64)
    if not 1 <= dim <= x.shape[1]:
        raise ValueError(f"PCA dim {dim} must be in [1, {x.shape[1]}]")
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / max(len(x) - 1, 1)  # (D, D)
    vals, vecs = np.linalg.eigh(cov)  # ascending
    comps = vecs[:, ::-1][:, :dim]
    # Deterministic signs: the largest-magnitude entry of each component is positive.
    flip = np.sign(comps[np.abs(comps).argmax(0), np.arange(dim)])
    return Pca(mean=mean, components=comps * np.where(flip == 0, 1.0, flip))


# --------------------------------------------------------------------------- ROC


@dataclass(frozen=True)
class Roc:
    """An ROC over every distinct threshold, from "accept nothing" to "accept everything".

    far, tar: (T,), non-decreasing, starting at (0, 0); thresholds: (T,), decreasing, the
    first one +inf. Point t is the rule ``score >= thresholds[t]``.
    """

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray
    n_genuine: int
    n_impostor: int


def _check_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in length")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores, labels


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> Roc:
    """ROC of similarity scores (N,) against same/different labels (N,) over all thresholds."""
    scores, labels = _check_labels(scores, labels)
    n_gen = int(labels.sum())
    n_imp = int(len(labels) - n_gen)
    if n_gen == 0 or n_imp == 0:
        raise ValueError("an ROC needs both genuine and impostor pairs")
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    y = labels[order]
    # The last position of each run of equal scores: ties move together.
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tp = np.cumsum(y)[ends]
    fp = (ends + 1) - tp
    return Roc(
        far=np.r_[0.0, fp / n_imp],
        tar=np.r_[0.0, tp / n_gen],
        thresholds=np.r_[np.inf, s[ends]],
        n_genuine=n_gen,
        n_impostor=n_imp,
    )


def auc(roc: Roc) -> float:
    """Area under the ROC (trapezoids; a tie between a genuine and an impostor counts 1/2)."""
    return float(np.trapezoid(roc.tar, roc.far))


def eer(roc: Roc) -> tuple[float, float]:
    """Equal error rate and its threshold.

    FAR - FRR is non-decreasing along the ROC; the EER is where it crosses zero, linearly
    interpolated between the two ROC points around the crossing. The threshold returned is
    that of the first ROC point with FAR >= FRR.
    """
    frr = 1.0 - roc.tar
    d = roc.far - frr  # (T,), starts at -1, ends at 1
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or i == 0:
        return float(roc.far[i]), float(roc.thresholds[i])
    w = d[i - 1] / (d[i - 1] - d[i])
    return float(roc.far[i - 1] + w * (roc.far[i] - roc.far[i - 1])), float(roc.thresholds[i])


# --------------------------------------------------------------------------- FAR points


def _matlab_round(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


@dataclass(frozen=True)
class FarPoints:
    """Operating points at target FARs (BLUFR rule, see the module docstring).

    target_far, threshold, achieved_far, rate: (F,). ``rate`` is the fraction of genuine
    scores >= threshold (the verification rate / TAR, or the DIR for identification).
    """

    target_far: np.ndarray
    threshold: np.ndarray
    achieved_far: np.ndarray
    rate: np.ndarray


class SortedScores:
    """A score array as a rank table: what ``far_thresholds`` asks of the impostor scores
    (the streaming :class:`facecl.verify.streaming.ImpostorRanks` answers the same)."""

    def __init__(self, scores: np.ndarray, dtype: np.dtype) -> None:
        self.sorted = np.sort(np.asarray(scores, dtype=dtype).ravel())  # ascending
        self.dtype = self.sorted.dtype
        self.n = len(self.sorted)
        self.min = self.sorted[0] if self.n else None
        self.max = self.sorted[-1] if self.n else None

    def kth_largest(self, k: np.ndarray) -> np.ndarray:
        return self.sorted[self.n - np.asarray(k, dtype=np.int64)]

    def count_at_least(self, thr: np.ndarray) -> np.ndarray:
        return self.n - np.searchsorted(self.sorted, thr, side="left")


class RankedScores(Protocol):
    """n, min, max, dtype; k-th largest (1-based) and the count of scores >= a threshold."""

    n: int
    dtype: np.dtype

    @property
    def min(self) -> Any: ...

    @property
    def max(self) -> Any: ...

    def kth_largest(self, k: np.ndarray) -> np.ndarray: ...

    def count_at_least(self, thr: np.ndarray) -> np.ndarray: ...


def far_ranks(fars: Sequence[float] | np.ndarray, n_impostor: int) -> np.ndarray:
    """The impostor ranks (1 = largest) whose scores are the thresholds at ``fars``."""
    k = _matlab_round(np.asarray(fars, dtype=np.float64).ravel() * n_impostor)
    return k[(k > 0) & (k < n_impostor)]


def far_thresholds(
    genuine: np.ndarray,
    impostor: np.ndarray | RankedScores,
    fars: Sequence[float] | np.ndarray,
) -> FarPoints:
    """Thresholds at target FARs from impostor scores, and the genuine acceptance at each.

    genuine: (G,), impostor: (I,) similarity scores, or their :class:`RankedScores` (a
    stream too large to store); fars: (F,) in [0, 1].
    """
    genuine = np.asarray(genuine).ravel()
    fars = np.asarray(fars, dtype=np.float64).ravel()
    n_given = impostor.n if not isinstance(impostor, np.ndarray) else impostor.size
    if len(genuine) == 0 or n_given == 0:
        raise ValueError("operating points need genuine and impostor scores")
    if ((fars < 0) | (fars > 1)).any():
        raise ValueError("FAR targets must be in [0, 1]")
    if isinstance(impostor, np.ndarray):
        dtype = np.result_type(genuine.dtype, impostor.dtype, np.float32)
        imp: RankedScores = SortedScores(impostor, dtype)
    else:
        imp = impostor
        dtype = np.result_type(genuine.dtype, imp.dtype, np.float32)
    gen = np.sort(genuine.astype(dtype, copy=False))
    n_imp = imp.n
    k = _matlab_round(fars * n_imp)  # allowed false accepts
    # Thresholds are kept exactly representable in the score dtype, so ">=" means the same
    # here as in the counts below.
    thr = np.empty(len(fars), dtype=dtype)
    mid = (k > 0) & (k < n_imp)
    thr[mid] = imp.kth_largest(k[mid])
    top = dtype.type(imp.max)
    above = gen[gen > top]
    if len(above):
        zero = dtype.type((float(top) + float(above[0])) / 2)
        zero = zero if zero > top else above[0]
    else:
        zero = np.nextafter(top, dtype.type(np.inf))
    thr[k == 0] = zero
    thr[k >= n_imp] = min(dtype.type(imp.min), gen[0])
    accepted_imp = imp.count_at_least(thr)
    accepted_gen = len(gen) - np.searchsorted(gen, thr, side="left")
    return FarPoints(
        target_far=fars,
        threshold=thr.astype(np.float64),
        achieved_far=accepted_imp / n_imp,
        rate=accepted_gen / len(gen),
    )


# --------------------------------------------------------------------------- accuracy


@dataclass(frozen=True)
class Threshold:
    threshold: float
    accuracy: float


def best_threshold(
    scores: np.ndarray, labels: np.ndarray, grid: np.ndarray | None = None
) -> Threshold:
    """The accuracy-maximising threshold (tie rule in the module docstring).

    scores, labels: (N,). grid: optional (T,) candidate thresholds, searched in the given order.
    """
    scores, labels = _check_labels(scores, labels)
    n = len(scores)
    if n == 0:
        raise ValueError("no pairs to choose a threshold on")
    n_gen = int(labels.sum())
    if grid is not None:
        gen = np.sort(scores[labels])
        imp = np.sort(scores[~labels])
        grid = np.asarray(grid, dtype=np.float64).ravel()
        same_gen = len(gen) - np.searchsorted(gen, grid, side="left")  # genuine >= t
        diff_imp = np.searchsorted(imp, grid, side="left")  # impostor < t
        correct = same_gen + diff_imp
        i = int(np.argmax(correct))
        return Threshold(float(grid[i]), float(correct[i] / n))
    order = np.argsort(scores, kind="stable")
    s = scores[order]
    y = labels[order]
    # Cut c (0..n): positions [0, c) predicted "different", [c, n) "same".
    imp_below = np.r_[0, np.cumsum(~y)]  # (n + 1,)
    gen_below = np.r_[0, np.cumsum(y)]
    correct = imp_below + (n_gen - gen_below)
    valid = np.r_[True, s[1:] > s[:-1], True]  # a cut must separate distinct scores
    correct = np.where(valid, correct, -1)
    c = int(np.argmax(correct))  # first maximum = lowest threshold
    if c == 0:
        t = float(s[0])
    elif c == n:
        t = float(np.nextafter(s[-1], np.inf))
    else:
        t = float((s[c - 1] + s[c]) / 2)
        if not s[c - 1] < t <= s[c]:  # adjacent floats: the midpoint rounds onto s[c - 1]
            t = float(s[c])
    return Threshold(t, float(correct[c] / n))


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Fraction of pairs decided correctly by ``score >= threshold``."""
    scores, labels = _check_labels(scores, labels)
    return float(((scores >= threshold) == labels).mean())


@dataclass(frozen=True)
class KFold:
    """Per-fold results: accuracy, threshold and training accuracy, each (K,)."""

    accuracy: np.ndarray
    threshold: np.ndarray
    train_accuracy: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.accuracy.mean())

    @property
    def std(self) -> float:
        """Population std (ddof=0) over folds, as LFW results are usually reported (and
        insightface / sklearn-style code computes them)."""
        return float(self.accuracy.std())

    @property
    def sample_std(self) -> float:
        """Sample std (ddof=1) over the K folds: the sigma of the LFW protocol."""
        k = len(self.accuracy)
        return float(self.accuracy.std(ddof=1)) if k > 1 else 0.0

    @property
    def standard_error(self) -> float:
        """Standard error of the mean, S_E = sigma / sqrt(K) with sigma the sample std
        (ddof=1): what the LFW protocol (Huang et al. 2007, View 2) asks papers to report."""
        return self.sample_std / float(np.sqrt(len(self.accuracy)))


def kfold_accuracy(
    scores: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray,
    folds: np.ndarray,
    grid: np.ndarray | None = None,
) -> KFold:
    """K-fold accuracy: each fold's threshold is chosen on the other folds, applied to it.

    scores: (N,), or a sequence of K arrays (N,) when the scores differ per fold (PCA fitted
    on each fold's training pairs); labels: (N,) bool; folds: (N,) fold index 0..K-1.
    """
    labels = np.asarray(labels).astype(bool)
    folds = np.asarray(folds)
    ids = np.unique(folds)
    if isinstance(scores, np.ndarray) and scores.ndim == 1:
        return _kfold_shared_scores(scores, labels, folds, ids, grid)
    acc, thr, tr_acc = [], [], []
    for j, k in enumerate(ids):  # scores that differ per fold: one sort per fold
        s = np.asarray(scores[j], dtype=np.float64)
        test = folds == k
        t = best_threshold(s[~test], labels[~test], grid)
        acc.append(accuracy_at(s[test], labels[test], t.threshold))
        thr.append(t.threshold)
        tr_acc.append(t.accuracy)
    return KFold(np.array(acc), np.array(thr), np.array(tr_acc))


INSIGHTFACE_GRID = np.arange(0, 4, 0.01)
"""insightface's accuracy thresholds on the squared L2 distance of unit vectors (0..4)."""


def contiguous_folds(n: int, k: int) -> np.ndarray:
    """(n,) fold of each pair when n pairs in file order are cut into k contiguous folds,
    the first ``n % k`` one pair larger (scikit-learn's ``KFold(k, shuffle=False)``)."""
    if not 1 <= k <= n:
        raise ValueError(f"cannot cut {n} pairs into {k} folds")
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return np.repeat(np.arange(k), sizes)


def insightface_kfold(a: np.ndarray, b: np.ndarray, same: np.ndarray, folds: np.ndarray) -> KFold:
    """k-fold accuracy as insightface's ``eval/verification.py`` computes it.

    a, b: (N, D) the two vectors of each pair; same: (N,) bool; folds: (N,) fold index.
    Each vector is L2-normalised (float64), a pair is "same" when the squared distance is
    ``< t``; per fold, ``t`` is the first value of :data:`INSIGHTFACE_GRID` with the best
    accuracy on the other folds. ``KFold.threshold`` holds the chosen distances.
    """
    a = l2_normalize(np.asarray(a, dtype=np.float64))
    b = l2_normalize(np.asarray(b, dtype=np.float64))
    dist = np.square(a - b).sum(1)  # (N,)
    same = np.asarray(same, dtype=bool)
    correct = (dist[None, :] < INSIGHTFACE_GRID[:, None]) == same[None, :]  # (T, N)
    acc, thr, tr_acc = [], [], []
    for k in np.unique(folds):
        test = folds == k
        train_acc = correct[:, ~test].mean(1)  # (T,)
        i = int(np.argmax(train_acc))
        acc.append(float(correct[i, test].mean()))
        thr.append(float(INSIGHTFACE_GRID[i]))
        tr_acc.append(float(train_acc[i]))
    return KFold(np.array(acc), np.array(thr), np.array(tr_acc))


def _kfold_shared_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    ids: np.ndarray,
    grid: np.ndarray | None,
) -> KFold:
    """All folds at once from one sort: (K, N) cumulative training counts per fold.

    Same candidates and tie rule as ``best_threshold`` applied to each fold's training pairs.
    """
    scores, labels = _check_labels(scores, labels)
    order = np.argsort(scores, kind="stable")
    s, y, f = scores[order], labels[order], folds[order]  # (N,) ascending
    n, k = len(s), len(ids)
    train = f[None, :] != ids[:, None]  # (K, N)
    gen_below = np.zeros((k, n + 1), dtype=np.int64)  # training genuine in [0, c)
    imp_below = np.zeros((k, n + 1), dtype=np.int64)
    np.cumsum(train & y, axis=1, out=gen_below[:, 1:])
    np.cumsum(train & ~y, axis=1, out=imp_below[:, 1:])
    n_train = train.sum(1)  # (K,)
    n_gen = gen_below[:, -1]
    rows = np.arange(k)
    if grid is not None:
        g = np.asarray(grid, dtype=np.float64).ravel()
        pos = np.searchsorted(s, g, side="left")  # (T,): scores below each grid value
        correct = imp_below[:, pos] + (n_gen[:, None] - gen_below[:, pos])  # (K, T)
        best = correct.argmax(1)  # first in grid order
        thr = g[best]
        train_acc = correct[rows, best] / n_train
    else:
        # Cut c (0..N) sits just before element c; a candidate cut must sit just before a
        # training element (or at the end) whose score differs from the previous training one.
        pos = np.arange(n)
        last = np.maximum.accumulate(np.where(train, pos, -1), axis=1)  # (K, N)
        prev = np.full((k, n + 1), -1, dtype=np.int64)  # last training index < c
        prev[:, 1:] = last
        starts = np.ones((k, n + 1), dtype=bool)
        starts[:, :n] = train
        s_next = np.r_[s, np.inf]  # (N + 1,)
        valid = starts & ((prev < 0) | (s[np.maximum(prev, 0)] < s_next[None, :]))
        correct = np.where(valid, imp_below + (n_gen[:, None] - gen_below), -1)  # (K, N + 1)
        best = correct.argmax(1)  # first maximum = lowest threshold
        train_acc = correct[rows, best] / n_train
        thr = np.empty(k)
        for j, (c, p) in enumerate(zip(best, prev[rows, best], strict=True)):  # K scalars
            if c == n:
                thr[j] = np.nextafter(s[p], np.inf)
            elif p < 0:
                thr[j] = s[c]
            else:
                mid = (s[p] + s[c]) / 2
                thr[j] = mid if s[p] < mid <= s[c] else s[c]
    test = ~train
    hit = (s[None, :] >= thr[:, None]) == y[None, :]  # (K, N)
    acc = (hit & test).sum(1) / test.sum(1)
    return KFold(acc, thr, train_acc)


def pca_fold_scores(
    emb: np.ndarray,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    folds: np.ndarray,
    metric: str,
    pca_dim: int,
) -> list[np.ndarray]:
    """Per-fold pair scores with a PCA fitted on the training folds' images only.

    emb: (M, D) image embeddings; idx_a, idx_b: (N,) rows of each pair's two images;
    folds: (N,). Returns K arrays (N,), fold order as ``np.unique(folds)``. Each training
    image counts once in the fit (the ECCV 2016 testing detail: PCA on the training folds).
    """
    out = []
    for k in np.unique(folds):
        train = folds != k
        rows = np.unique(np.r_[idx_a[train], idx_b[train]])
        pca = fit_pca(emb[rows], pca_dim)
        out.append(pair_scores_at(emb, idx_a, idx_b, metric, pca.transform))
    return out


# --------------------------------------------------------------------------- identification


@dataclass(frozen=True)
class OpenSet:
    """Open-set identification (BLUFR ``OpenSetROC``).

    dir: (R, F) detection-and-identification rate per rank point and FAR target;
    thresholds, achieved_far: (F,); ranks: (R,); probe_ranks: (P_gen,) 1-based rank of each
    genuine probe's best same-identity gallery match; genuine_scores: (P_gen,) that match's
    score; impostor_scores: (P_imp,) each impostor probe's best gallery score.
    """

    dir: np.ndarray
    target_far: np.ndarray
    thresholds: np.ndarray
    achieved_far: np.ndarray
    ranks: np.ndarray
    probe_ranks: np.ndarray
    genuine_scores: np.ndarray
    impostor_scores: np.ndarray

    def cmc(self, rank: int) -> float:
        """Closed-set identification rate at ``rank`` over the genuine probes (no threshold)."""
        return float((self.probe_ranks <= rank).mean())


def open_set_rates(
    gen_score: np.ndarray,
    gen_rank: np.ndarray,
    imp_score: np.ndarray,
    fars: Sequence[float] | np.ndarray,
    ranks: Sequence[int] = (1,),
) -> OpenSet:
    """DIR at FAR and rank: a genuine probe counts when its best same-identity match is within
    ``rank`` AND scores >= the threshold set on the impostor probes' best scores at that FAR.

    gen_score, gen_rank: (P_gen,) each genuine probe's best same-identity score and its 1-based
    rank; imp_score: (P_imp,) each impostor probe's best gallery score (the probes whose label
    is not in the gallery). :func:`facecl.verify.streaming.probe_stats` computes all three.
    """
    if len(gen_score) == 0 or len(imp_score) == 0:
        raise ValueError("open-set identification needs genuine and impostor probes")
    pts = far_thresholds(gen_score, imp_score, fars)
    ranks_arr = np.asarray(ranks, dtype=np.int64)
    detected = gen_score[:, None] >= pts.threshold[None, :]  # (P_gen, F)
    within = gen_rank[:, None] <= ranks_arr[None, :]  # (P_gen, R)
    dir_ = (within[:, :, None] & detected[:, None, :]).mean(0)  # (R, F)
    return OpenSet(
        dir=dir_,
        target_far=pts.target_far,
        thresholds=pts.threshold,
        achieved_far=pts.achieved_far,
        ranks=ranks_arr,
        probe_ranks=gen_rank,
        genuine_scores=gen_score,
        impostor_scores=imp_score,
    )


def mean_std(values: Sequence[float] | np.ndarray, ddof: int = 1) -> dict[str, float]:
    """mean, std and mean - std (BLUFR's reported figure; MATLAB's std, ddof=1, by default)."""
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std(ddof=ddof)) if len(v) > ddof else 0.0
    return {"mean": float(v.mean()), "std": sd, "mean_minus_std": float(v.mean() - sd)}


# BLUFR's evaluation grids (its demo code): FAR points for the verification ROC and the
# open-set ROC, and the rank points of the CMC.
BLUFR_VERI_FARS = np.r_[0.0, [j * 10.0**e for e in range(-8, 0) for j in range(1, 10)], 1.0]
BLUFR_OSI_FARS = np.r_[0.0, [j * 10.0**e for e in range(-4, 0) for j in range(1, 10)], 1.0]
