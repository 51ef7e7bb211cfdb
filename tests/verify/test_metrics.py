"""Metric functions against brute-force references and hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from facecl.verify import metrics as M
from facecl.verify import streaming as S

from . import oracle as O

# --------------------------------------------------------------------------- references


def brute_best_threshold(scores, labels):
    """Loop over every candidate threshold; same tie rule as documented (lowest wins)."""
    s = np.unique(scores)
    mids = [(a + b) / 2 for a, b in zip(s[:-1], s[1:], strict=True)]
    cands = [s[0], *mids, np.nextafter(s[-1], np.inf)]
    best_t, best_acc = None, -1.0
    for t in cands:  # ascending
        acc = np.mean((scores >= t) == labels)
        if acc > best_acc:
            best_t, best_acc = t, acc
    return best_t, best_acc


def brute_kfold(scores, labels, folds):
    accs, thrs = [], []
    for k in np.unique(folds):
        test = folds == k
        t, _ = brute_best_threshold(scores[~test], labels[~test])
        accs.append(np.mean((scores[test] >= t) == labels[test]))
        thrs.append(t)
    return np.array(accs), np.array(thrs)


def insightface_style_kfold(dist, issame, folds, thresholds):
    """The reference grid search: distance, `dist < thr` is "same", first best on training."""
    accs = []
    for k in np.unique(folds):
        test = folds == k
        train_acc = [np.mean((dist[~test] < t) == issame[~test]) for t in thresholds]
        t = thresholds[int(np.argmax(train_acc))]
        accs.append(np.mean((dist[test] < t) == issame[test]))
    return np.array(accs)


def lfw_folds(n_folds=10, per_fold=60):
    return np.repeat(np.arange(n_folds), per_fold)


# --------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("shuffled", [False, True])
def test_kfold_accuracy_equals_brute_force(seed, decimals, shuffled):
    rng = np.random.default_rng(seed)
    folds = lfw_folds()
    if shuffled:  # folds interleaved in the score order, not contiguous blocks
        folds = rng.permutation(folds)
    labels = rng.random(len(folds)) < 0.5
    scores = rng.normal(labels * 0.8, 1.0)
    if decimals is not None:  # many ties
        scores = np.round(scores, decimals)
    got = M.kfold_accuracy(scores, labels, folds)
    ref_acc, ref_thr = brute_kfold(scores, labels, folds)
    np.testing.assert_array_equal(got.accuracy, ref_acc)
    np.testing.assert_array_equal(got.threshold, ref_thr)
    for k in range(10):
        tr = folds != k
        assert got.train_accuracy[k] == brute_best_threshold(scores[tr], labels[tr])[1]


def test_tie_between_cuts_picks_the_lowest_threshold_at_the_midpoint():
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    labels = np.array([False, True, False, True])
    # Cuts at 0.15 and at 0.35 both classify 3 of 4 correctly: the lower one wins.
    t = M.best_threshold(scores, labels)
    assert t.threshold == pytest.approx(0.15) and t.accuracy == 0.75


def test_score_equal_to_threshold_is_same():
    scores = np.array([0.5, 0.5, 0.9])
    labels = np.array([False, True, True])
    # "All same" (t = 0.5) and the cut at 0.7 tie at 2/3; the lowest is the training minimum.
    t = M.best_threshold(scores, labels)
    assert t.threshold == 0.5 and t.accuracy == pytest.approx(2 / 3)
    assert M.accuracy_at(np.array([0.5]), np.array([True]), 0.5) == 1.0
    assert M.accuracy_at(np.array([0.5]), np.array([False]), 0.5) == 0.0


def test_all_different_edge_cut_is_above_the_maximum():
    scores = np.array([0.1, 0.2, 0.3])
    labels = np.array([False, False, False])
    t = M.best_threshold(scores, labels)
    assert t.threshold > 0.3 and t.accuracy == 1.0
    assert M.accuracy_at(scores, labels, t.threshold) == 1.0


def test_adjacent_floats_midpoint_still_separates():
    a = 0.3
    b = np.nextafter(a, 1.0)
    t = M.best_threshold(np.array([a, b]), np.array([False, True]))
    assert t.accuracy == 1.0 and a < t.threshold <= b


@pytest.mark.parametrize("seed", range(3))
def test_grid_mode_matches_insightface_grid_search(seed):
    rng = np.random.default_rng(seed)
    folds = lfw_folds(10, 100)
    issame = rng.random(len(folds)) < 0.5
    dist = np.clip(rng.normal(np.where(issame, 1.0, 1.6), 0.35), 0, 4)
    grid = np.arange(0, 4, 0.01)
    ref = insightface_style_kfold(dist, issame, folds, grid)
    # Score = -distance; "dist < thr" is "score > -thr", the same as ">=" for continuous data.
    got = M.kfold_accuracy(-dist, issame, folds, grid=-grid)
    np.testing.assert_array_equal(got.accuracy, ref)


def test_kfold_spread_std_and_lfw_standard_error():
    kf = M.KFold(np.array([0.9, 0.8, 1.0, 0.9]), np.zeros(4), np.zeros(4))
    # deviations 0, -0.1, 0.1, 0: sum of squares 0.02
    assert kf.std == pytest.approx(np.sqrt(0.02 / 4))  # ddof 0
    assert kf.sample_std == pytest.approx(np.sqrt(0.02 / 3))  # ddof 1
    assert kf.standard_error == pytest.approx(np.sqrt(0.02 / 3) / 2)  # / sqrt(K)
    assert M.KFold(np.array([0.7]), np.zeros(1), np.zeros(1)).standard_error == 0.0


def test_kfold_accepts_per_fold_scores():
    rng = np.random.default_rng(0)
    folds = lfw_folds(3, 20)
    labels = rng.random(60) < 0.5
    s = rng.normal(size=60)
    a = M.kfold_accuracy(s, labels, folds)
    b = M.kfold_accuracy([s, s, s], labels, folds)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    c = M.kfold_accuracy([s, -s, s], labels, folds)
    assert c.threshold[1] == M.best_threshold(-s[folds != 1], labels[folds != 1]).threshold


# --------------------------------------------------------------------------- ROC, AUC, EER


def test_roc_auc_eer_hand_built():
    scores = np.array([0.6, 0.8, 0.2, 0.7])
    labels = np.array([True, True, False, False])
    roc = M.roc_curve(scores, labels)
    np.testing.assert_allclose(roc.far, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(roc.tar, [0, 0.5, 0.5, 1, 1])
    assert roc.thresholds[0] == np.inf
    np.testing.assert_allclose(roc.thresholds[1:], [0.8, 0.7, 0.6, 0.2])
    assert M.auc(roc) == pytest.approx(0.75)  # 3 of the 4 genuine-impostor orderings right
    e, t = M.eer(roc)
    assert e == pytest.approx(0.5) and t == pytest.approx(0.7)


def test_eer_is_interpolated():
    # FAR - FRR goes -0.5 -> +0.5 between two points: crossing halfway.
    roc = M.roc_curve(np.array([3.0, 2.0, 1.0, 0.0]), np.array([True, False, True, False]))
    e, _ = M.eer(roc)
    assert e == pytest.approx(0.5)
    perfect = M.roc_curve(np.array([0.9, 0.8, 0.1]), np.array([True, True, False]))
    assert M.auc(perfect) == 1.0 and M.eer(perfect)[0] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_auc_equals_mann_whitney_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.4
    scores = np.round(rng.normal(labels * 0.5, 1.0), 1)
    g, i = scores[labels], scores[~labels]
    ref = ((g[:, None] > i[None, :]).sum() + 0.5 * (g[:, None] == i[None, :]).sum()) / (
        len(g) * len(i)
    )
    assert M.auc(M.roc_curve(scores, labels)) == pytest.approx(ref, abs=1e-12)


def test_roc_refuses_nan_and_one_class():
    with pytest.raises(ValueError, match="NaN"):
        M.roc_curve(np.array([np.nan, 1.0]), np.array([True, False]))
    with pytest.raises(ValueError, match="both"):
        M.roc_curve(np.array([0.0, 1.0]), np.array([True, True]))


# --------------------------------------------------------------------------- FAR points


def test_far_thresholds_hand_built():
    imp = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    gen = np.array([0.995, 0.99, 0.5, 1.5])
    pts = M.far_thresholds(gen, imp, [0.01, 0.0015, 0.0, 1.0])
    # FAR 1%: 10 false accepts allowed -> the 10th largest impostor, 0.990 (>= counts).
    assert pts.threshold[0] == pytest.approx(0.990)
    assert pts.achieved_far[0] == 0.010 and pts.rate[0] == 0.75
    # 1.5 false accepts rounds half away from zero, like MATLAB: 2 -> 0.998.
    assert pts.threshold[1] == pytest.approx(0.998) and pts.achieved_far[1] == 0.002
    assert pts.rate[1] == 0.25
    # FAR 0: halfway between the top impostor and the lowest genuine above it.
    assert pts.threshold[2] == pytest.approx((0.999 + 1.5) / 2)
    assert pts.achieved_far[2] == 0.0 and pts.rate[2] == 0.25
    # FAR 1: accept everything.
    assert pts.achieved_far[3] == 1.0 and pts.rate[3] == 1.0


def test_far_zero_without_genuine_above_is_just_above_top_impostor():
    pts = M.far_thresholds(np.array([0.2, 0.3]), np.array([0.1, 0.9]), [0.0])
    assert pts.threshold[0] > 0.9 and pts.rate[0] == 0.0 and pts.achieved_far[0] == 0.0


def test_far_thresholds_float32_ties_are_exact():
    imp = np.array([0.5, 0.5, 0.5, 0.1], dtype=np.float32)
    gen = np.array([0.5, 0.2], dtype=np.float32)
    pts = M.far_thresholds(gen, imp, [0.25])
    # One false accept allowed, but three impostors tie at the threshold: all are accepted.
    assert pts.threshold[0] == 0.5 and pts.achieved_far[0] == 0.75 and pts.rate[0] == 0.5


# --------------------------------------------------------------------------- identification


def open_set_case():
    gallery = np.array([1, 2, 3])
    probes = np.array([1, 2, 3, 7, 7, 8, 9])
    score = np.array(
        [  # rows: gallery 1, 2, 3; columns: probes
            [0.90, 0.80, 0.10, 0.85, 0.10, 0.40, 0.30],
            [0.20, 0.70, 0.20, 0.10, 0.50, 0.10, 0.10],
            [0.10, 0.10, 0.60, 0.20, 0.20, 0.20, 0.20],
        ]
    )
    return score, gallery, probes


def test_open_set_dir_hand_built():
    score, gallery, probes = open_set_case()
    # Genuine probes: best match 0.9 (rank 1), 0.7 (rank 2: 0.8 from gallery 1 beats it),
    # 0.6 (rank 1). Impostor probes' best scores: 0.85, 0.5, 0.4, 0.3.
    res = O.open_set_identification(score, gallery, probes, [0.25, 0.5, 0.0], ranks=(1, 2))
    np.testing.assert_array_equal(res.probe_ranks, [1, 2, 1])
    np.testing.assert_allclose(res.impostor_scores, [0.85, 0.5, 0.4, 0.3])
    # FAR 25%: one false alarm -> threshold 0.85; only probe 1 (0.9, rank 1) passes.
    assert res.thresholds[0] == pytest.approx(0.85)
    assert res.dir[0, 0] == pytest.approx(1 / 3) and res.dir[1, 0] == pytest.approx(1 / 3)
    # FAR 50%: threshold 0.5; rank 1: probes 1 and 3; rank 2 adds probe 2.
    assert res.dir[0, 1] == pytest.approx(2 / 3) and res.dir[1, 1] == pytest.approx(1.0)
    # FAR 0: threshold halfway between 0.85 and 0.9.
    assert res.thresholds[2] == pytest.approx(0.875) and res.dir[0, 2] == pytest.approx(1 / 3)
    assert res.cmc(1) == pytest.approx(2 / 3) and res.cmc(2) == 1.0


def test_open_set_needs_both_probe_kinds():
    score, gallery, probes = open_set_case()
    with pytest.raises(ValueError, match="genuine and impostor"):
        O.open_set_identification(score[:, :3], gallery, probes[:3], [0.01])


def test_mean_std_uses_matlab_std():
    r = M.mean_std([0.9, 0.8, 1.0])
    assert r["mean"] == pytest.approx(0.9) and r["std"] == pytest.approx(0.1)
    assert r["mean_minus_std"] == pytest.approx(0.8)


# --------------------------------------------------------------------------- scoring, PCA


def test_pair_scores_and_matrix():
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(M.pair_scores(a, b, "cosine"), [0.0, 1.0])
    np.testing.assert_allclose(M.pair_scores(a, b, "euclidean"), [-np.sqrt(5.0), 0.0])
    np.testing.assert_allclose(
        O.score_matrix(a, b, "euclidean"), [[-np.sqrt(5), -np.sqrt(20)], [-np.sqrt(13), 0.0]]
    )
    with pytest.raises(ValueError, match="unknown metric"):
        M.pair_scores(a, b, "hamming")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_all_pairs_stats_matches_brute_force(metric, monkeypatch):
    monkeypatch.setattr(S, "BLOCK_SCORES", 16)  # 4 x 4 tiles: diagonal and off-diagonal ones
    rng = np.random.default_rng(1)
    x = rng.normal(size=(23, 5)).astype(np.float32)
    labels = rng.integers(0, 6, 23)
    every_rank = lambda n: np.arange(1, n + 1)  # noqa: E731
    res = S.all_pairs_stats(x, labels, metric, every_rank, bins=7)
    full = O.score_matrix(x.astype(np.float64), x.astype(np.float64), metric)
    ref_g = [full[i, j] for i in range(23) for j in range(i) if labels[i] == labels[j]]
    ref_i = [full[i, j] for i in range(23) for j in range(i) if labels[i] != labels[j]]
    np.testing.assert_allclose(np.sort(res.genuine), np.sort(ref_g), atol=1e-5)
    assert res.impostor.n == len(ref_i)
    kth = res.impostor.kth_largest(np.arange(1, len(ref_i) + 1))
    np.testing.assert_allclose(kth, np.sort(ref_i)[::-1], atol=1e-5)
    assert res.hist is not None and res.hist[1].sum() == len(ref_g)
    assert res.hist[2].sum() == len(ref_i)


@pytest.mark.parametrize("flush", [1, 97, 1 << 22])
def test_impostor_ranks_are_exact_with_ties_and_signed_zeros(flush, monkeypatch):
    """k-th largest and the count >= it, against a sorted array: ties, -0.0, negatives; the
    pass-2 indices counted after every block, every few blocks, or once at the end."""
    import torch

    monkeypatch.setattr(S, "_FLUSH", flush)
    rng = np.random.default_rng(4)
    vals = np.r_[rng.normal(size=500), np.full(40, 0.25), [0.0, -0.0] * 10, [-3.5] * 7]
    vals = rng.permutation(vals).astype(np.float32)
    ranks = S.ImpostorRanks()
    for chunk in np.array_split(vals, 7):
        ranks.count(torch.from_numpy(chunk))
    extra = torch.from_numpy(vals[:50].copy())  # counted in and taken out again, both passes
    ranks.count(extra.clone(), owned=True)
    ranks.count(extra.clone(), sign=-1, owned=True)
    ks = np.arange(1, len(vals) + 1)
    ranks.plan(ks)
    for chunk in np.array_split(vals, 3):  # pass 2 need not see the same blocks
        ranks.refine(torch.from_numpy(chunk))
    ranks.refine(extra.clone(), owned=True)
    ranks.refine(extra.clone(), sign=-1, owned=True)
    dense = M.SortedScores(vals, np.dtype(np.float32))
    np.testing.assert_array_equal(ranks.kth_largest(ks), dense.kth_largest(ks))
    thr = dense.kth_largest(ks)
    np.testing.assert_array_equal(ranks.count_at_least(thr), dense.count_at_least(thr))
    fars = [0.0, 1e-3, 0.05, 0.5, 0.9, 1.0]
    gen = rng.normal(size=50).astype(np.float32) + 1.0
    a, b = M.far_thresholds(gen, ranks, fars), M.far_thresholds(gen, vals, fars)
    for f in ("threshold", "achieved_far", "rate"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_pca_finds_the_dominant_direction():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)) * [5.0, 1.0, 0.1] + [1.0, 2.0, 3.0]
    p = M.fit_pca(x, 2)
    np.testing.assert_allclose(np.abs(p.components[:, 0]), [1, 0, 0], atol=0.05)
    np.testing.assert_allclose(p.mean, x.mean(0))
    assert p.transform(x).shape == (500, 2)


def test_pca_is_fitted_on_training_folds_only():
    rng = np.random.default_rng(0)
    folds = lfw_folds(3, 10)
    emb = rng.normal(size=(60, 8))
    idx_a, idx_b = np.arange(0, 60, 2), np.arange(1, 60, 2)  # each image in one pair only
    labels = rng.random(30) < 0.5
    before = M.pca_fold_scores(emb, idx_a, idx_b, folds, "cosine", 4)
    changed = emb.copy()
    test_rows = np.r_[idx_a[folds == 0], idx_b[folds == 0]]
    changed[test_rows] *= 100.0
    changed[test_rows, 0] += 50.0
    after = M.pca_fold_scores(changed, idx_a, idx_b, folds, "cosine", 4)
    # Fold 0's projection ignores fold 0's images: its training scores do not move.
    np.testing.assert_allclose(after[0][folds != 0], before[0][folds != 0])
    # Every other fold trains on them, so its projection changes.
    assert not np.allclose(after[1][folds != 1], before[1][folds != 1])
    res = M.kfold_accuracy(before, labels, folds)
    assert res.accuracy.shape == (3,)
