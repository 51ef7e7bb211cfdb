"""The dense verification code facecl used before the block-wise one: the test oracle.

It holds whole score matrices (gallery x probes in float64; every test pair's score in
float32), so it only runs at test sizes. The streaming code (:mod:`facecl.verify.streaming`)
must give the same numbers.
"""

from __future__ import annotations

import numpy as np

from facecl.verify import metrics as M


def score_matrix(a: np.ndarray, b: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """All-against-all similarities. a: (M, D), b: (N, D) -> (M, N) in a's float dtype."""
    if metric == "cosine":
        return M.l2_normalize(a) @ M.l2_normalize(b).T
    if metric == "euclidean":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)  # (M, N)
        return -np.sqrt(np.maximum(sq, 0.0))
    raise ValueError(f"unknown metric {metric!r}")


def all_pairs_scores(
    x: np.ndarray, labels: np.ndarray, metric: str = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) scores of every unordered pair {i, j}, i != j, in x's dtype."""
    if metric == "cosine":
        x = M.l2_normalize(x).astype(x.dtype, copy=False)
        s = x @ x.T
    else:
        s = score_matrix(x, x, metric)
    i, j = np.tril_indices(len(x), -1)
    same = labels[i] == labels[j]
    return s[i, j][same], s[i, j][~same]


def genuine_probe_ranks(
    score: np.ndarray, gallery_labels: np.ndarray, probe_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best same-identity score (P,) and its rank (1 + gallery entries strictly above)."""
    match = np.asarray(gallery_labels)[:, None] == np.asarray(probe_labels)[None, :]  # (G, P)
    best = np.where(match, score, -np.inf).max(0)
    return best, (score > best[None, :]).sum(0) + 1


def open_set_identification(
    score: np.ndarray,
    gallery_labels: np.ndarray,
    probe_labels: np.ndarray,
    fars,
    ranks=(1,),
) -> M.OpenSet:
    """Open-set DIR of a (G, P) score matrix."""
    gallery_labels, probe_labels = np.asarray(gallery_labels), np.asarray(probe_labels)
    is_gen = np.isin(probe_labels, gallery_labels)
    gen_score, gen_rank = genuine_probe_ranks(
        score[:, is_gen], gallery_labels, probe_labels[is_gen]
    )
    imp_score = score[:, ~is_gen].max(0) if (~is_gen).any() else np.zeros(0)
    return M.open_set_rates(gen_score, gen_rank, imp_score, fars, ranks)


def identify_numbers(gv, gl, pv, pl, metric, fars, rank, bins):
    """The old ``evaluate_identify`` numbers: CMC (20 ranks), open-set DIR curve, histogram."""
    from facecl.verify.evaluate import histogram

    score = score_matrix(gv.astype(np.float64), pv.astype(np.float64), metric)  # (G, P)
    is_gen = np.isin(pl, gl)
    _, granks = genuine_probe_ranks(score[:, is_gen], gl, pl[is_gen])
    cmc = [float((granks <= r).mean()) for r in range(1, min(20, len(gl)) + 1)]
    osr = open_set_identification(score, gl, pl, fars, (rank,)) if (~is_gen).any() else None
    same = gl[:, None] == pl[None, :]
    return cmc, osr, histogram(score[same], score[~same], bins)


def blufr_trial_numbers(x, labels, gal, probe, veri_fars, osi_fars, metric, rank, bins):
    """The old BLUFR trial: VR at each FAR over all pairs of x (float32), open-set DIR of the
    rows ``probe`` against ``gal`` (float32), and the histogram of the pair scores."""
    from facecl.verify.evaluate import histogram

    gen, imp = all_pairs_scores(x, labels, metric)
    veri = M.far_thresholds(gen, imp, veri_fars)
    score = score_matrix(x[gal], x[probe], metric)
    osr = open_set_identification(score, labels[gal], labels[probe], osi_fars, (rank,))
    return veri, osr, histogram(gen, imp, bins)
