"""The block-wise protocols give the old dense code's numbers (tests/verify/oracle.py).

Blocks are shrunk so that every path crosses many blocks. Counts and rates must be identical;
thresholds identical to the oracle's float32 (BLUFR) or within float32 rounding of its float64
(identify, whose old code scored in float64).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facecl.embed.artifact import from_arrays
from facecl.verify import metrics as M
from facecl.verify import streaming as S
from facecl.verify.config import VerifyConfig
from facecl.verify.evaluate import _BlufrFars, evaluate_blufr, evaluate_identify, evaluate_pairs
from facecl.verify.protocols import BlufrConfig, BlufrTrial, PairList, read_lfw_pairs

from . import oracle as O
from .helpers import identity_vectors, pair_keys


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(S, "BLOCK_SCORES", 1024)  # identify: 1024 // P gallery rows; 32 x 32 tiles
    monkeypatch.setattr(S, "PROBE_BLOCK", 13)  # probes in blocks of 13
    monkeypatch.setattr(S, "_FLUSH", 50)  # pass-2 indices counted many times
    monkeypatch.setattr(M, "PAIR_BLOCK", 7)


def _emb(keys: list[str], vectors: np.ndarray):
    return from_arrays({"embeddings": vectors, "keys": np.array(keys)}, Path("mem.h5"), {})


def _keys(n_ids: int, per_id: int) -> list[str]:
    return [f"P{i:03d}/P{i:03d}_{n:04d}" for i in range(n_ids) for n in range(1, per_id + 1)]


def _identify_case(tmp_path, keys, vectors, n_gallery_ids):
    """Gallery: the first image of the first ``n_gallery_ids`` identities; probes: the rest
    (identities beyond them are the impostor probes)."""
    emb = _emb(keys, vectors)
    ids = sorted({k.split("/")[0] for k in keys})
    gal_ids = set(ids[:n_gallery_ids])
    first = {i: min(k for k in keys if k.startswith(i + "/")) for i in ids}
    gallery = [first[i] for i in ids if i in gal_ids]
    probes = [k for k in keys if k not in gallery]
    (tmp_path / "g.txt").write_text("\n".join(gallery) + "\n")
    (tmp_path / "p.txt").write_text("\n".join(probes) + "\n")
    return emb, gallery, probes


def _check_identify(tmp_path, keys, vectors, n_gallery_ids, metric):
    emb, gallery, probes = _identify_case(tmp_path, keys, vectors, n_gallery_ids)
    cfg = VerifyConfig(protocol="identify", metric=metric, rank=2)
    ev = evaluate_identify(emb, str(tmp_path / "g.txt"), str(tmp_path / "p.txt"), cfg)
    ids = np.array(emb.identities)
    g, p = [emb.find(k) for k in gallery], [emb.find(k) for k in probes]
    fars = np.unique(np.r_[M.BLUFR_OSI_FARS, cfg.osi_far])
    cmc, osr, hist = O.identify_numbers(
        emb.vectors[g], ids[g], emb.vectors[p], ids[p], metric, fars, cfg.rank, cfg.hist_bins
    )
    res = ev.report["results"]
    assert res["cmc"] == cmc
    assert res["open_set"]["dir"] == osr.dir[0].tolist()
    assert res["open_set"]["threshold"] == pytest.approx(osr.thresholds[8 + 9], abs=1e-6)
    assert res["open_set"]["achieved_far"] == float(osr.achieved_far[8 + 9])
    assert ev.hist is not None
    np.testing.assert_allclose(ev.hist["edges"], hist["edges"], atol=1e-6)
    for kind in ("genuine", "impostor"):  # float32 vs float64 scores: an edge case may move
        assert ev.hist[kind].sum() == hist[kind].sum()
        assert np.abs(ev.hist[kind] - hist[kind]).sum() <= 2
    return res


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_identify_matches_the_dense_oracle_on_random_data(tmp_path, metric):
    keys = _keys(60, 4)
    vectors = identity_vectors(keys, dim=24, noise=1.2, seed=5)  # hard: ranks spread out
    res = _check_identify(tmp_path, keys, vectors, 40, metric)
    assert 0.2 < res["rank1"] < 0.95 and res["cmc"][-1] > res["rank1"]


def test_identify_matches_the_dense_oracle_on_the_fixture_keys(tmp_path, lfw_mini):
    keys = pair_keys(lfw_mini / "pairs.txt")
    vectors = identity_vectors(keys, dim=32, noise=0.9, seed=2)
    n_ids = len({k.split("/")[0] for k in keys})
    _check_identify(tmp_path, keys, vectors, n_ids * 2 // 3, "cosine")


def test_identify_rank_is_capped_beyond_the_kept_topk():
    """Ranks beyond ``max_rank`` read max_rank + 1; the ones within are exact."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 8)).astype(np.float32)
    gl, pl = np.arange(60) % 30, np.arange(20) % 30
    sets = S.GalleryProbes(x, np.arange(60), np.arange(60, 80), gl, pl)
    st = S.probe_stats(sets, "cosine", max_rank=3)
    score = O.score_matrix(x[:60].astype(np.float64), x[60:].astype(np.float64))
    _, ranks = O.genuine_probe_ranks(score, gl, pl)
    np.testing.assert_array_equal(st.rank, np.minimum(ranks, 4))
    assert (ranks > 4).any() and (ranks <= 3).any()


def _blufr_case(n_ids=40, per_id=5, trials=2, seed=0):
    rng = np.random.default_rng(seed)
    keys = _keys(n_ids, per_id)
    labels = np.repeat(np.arange(1, n_ids + 1), per_id)
    out = []
    for _ in range(trials):
        perm = rng.permutation(n_ids)
        test_ids, train_ids = perm[: n_ids * 3 // 4], perm[n_ids * 3 // 4 :]
        test = np.flatnonzero(np.isin(labels - 1, test_ids))
        train = np.flatnonzero(np.isin(labels - 1, train_ids))
        gal_ids = test_ids[: len(test_ids) // 2]
        first = np.r_[0, np.flatnonzero(np.diff(labels[test]))[:] + 1]
        gallery = np.array([test[i] for i in first if labels[test[i]] - 1 in gal_ids])
        probe = np.setdiff1d(test, gallery)
        out.append(BlufrTrial(train, test, gallery, probe))
    conf = BlufrConfig([k.split("/")[1] + ".jpg" for k in keys], keys, labels, out,
                       np.zeros(0, np.int64), np.zeros(0, np.int64), "mem")  # fmt: skip
    return conf, keys


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_blufr_matches_the_dense_oracle(metric):
    conf, keys = _blufr_case()
    vectors = identity_vectors(keys, dim=16, noise=1.5, seed=3)
    emb = _emb(keys, vectors)
    cfg = VerifyConfig(protocol="blufr", metric=metric)
    ev = evaluate_blufr(emb, conf, cfg)
    fars = _BlufrFars.of(cfg)
    trials = ev.report["results"]["trials"]
    vr_curves = []
    for t, trial in enumerate(conf.trials):
        x = emb.vectors[trial.test]
        pos = {int(i): j for j, i in enumerate(trial.test)}
        gal = np.array([pos[int(i)] for i in trial.gallery])
        probe = np.array([pos[int(i)] for i in trial.probe])
        veri, osr, hist = O.blufr_trial_numbers(
            x, conf.labels[trial.test], gal, probe, fars.veri, fars.osi, metric, 1, 60
        )
        rec = trials[t]
        assert rec["vr"] == float(veri.rate[fars.vi])
        tol = 0.0 if metric == "cosine" else 2e-6  # euclidean: float32 cancellation order
        assert abs(rec["vr_threshold"] - float(veri.threshold[fars.vi])) <= tol
        assert rec["vr_achieved_far"] == float(veri.achieved_far[fars.vi])
        assert rec["dir"] == float(osr.dir[0, fars.oi])
        assert rec["closed_set_rank1"] == osr.cmc(1)
        n = len(trial.test)
        assert rec["n_genuine_pairs"] + rec["n_impostor_pairs"] == n * (n - 1) // 2
        vr_curves.append(veri.rate)
        if t == 0:
            assert ev.hist is not None
            for kind in ("genuine", "impostor"):
                assert np.abs(ev.hist[kind] - hist[kind]).sum() <= 2
    curves = ev.report["results"]["curves"]  # every FAR of the grid, 1e-8 .. 1
    assert curves["vr_mean"] == np.mean(vr_curves, 0).tolist()


@pytest.mark.parametrize("pca", [0, 6])
def test_pairs_scores_block_by_block_are_the_dense_ones(lfw_mini, pca):
    keys = pair_keys(lfw_mini / "pairs.txt")
    vectors = identity_vectors(keys, dim=16, noise=0.9, seed=2)
    emb = _emb(keys, vectors)
    pairs: PairList = read_lfw_pairs(lfw_mini / "pairs.txt")
    cfg = VerifyConfig(pca_dim=pca)
    ev = evaluate_pairs(emb, pairs, cfg)
    assert ev.scores is not None
    ia = np.array([emb.find(a) for a in pairs.a])
    ib = np.array([emb.find(b) for b in pairs.b])
    if not pca:
        dense = M.pair_scores(emb.vectors[ia], emb.vectors[ib])
        np.testing.assert_array_equal(ev.scores["score"], dense)
    else:  # each pair scored by the projection fitted without its fold, dense
        for k in np.unique(pairs.fold):
            train = pairs.fold != k
            rows = np.unique(np.r_[ia[train], ib[train]])
            z = M.fit_pca(emb.vectors[rows], pca).transform(emb.vectors.astype(np.float64))
            dense = M.pair_scores(z[ia], z[ib])
            np.testing.assert_allclose(ev.scores["score"][~train], dense[~train], rtol=1e-12)
