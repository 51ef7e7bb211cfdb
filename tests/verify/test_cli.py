"""`facecl verify` end to end through the CLI, on fixture embeddings keyed by LFW names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.artifacts import read_manifest
from facecl.cli import app
from facecl.verify import metrics as M
from facecl.verify.protocols import read_lfw_pairs

from . import oracle as O
from .helpers import identity_vectors, make_embed_artifact, pair_keys

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["verify", *map(str, args)])


@pytest.fixture
def mini_emb(tmp_path, lfw_mini):
    """Identity-structured random embeddings for every image of the fixture's pairs.txt."""
    keys = pair_keys(lfw_mini / "pairs.txt")
    return make_embed_artifact(tmp_path, keys, identity_vectors(keys, noise=1.2))


def assert_png(path):
    import matplotlib.image as mpimg

    assert path.is_file() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img[..., :3].std() > 0.01  # not a blank canvas


def test_lfw_pairs_end_to_end(tmp_path, lfw_mini, mini_emb):
    out = tmp_path / "rep"
    r = invoke(mini_emb, "--pairs", lfw_mini / "pairs.txt", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["protocol"] == "lfw-pairs" and doc["reused"] is False
    # The identity structure is recoverable: clearly better than chance.
    assert doc["summary"]["accuracy"] > 0.7 and doc["summary"]["auc"] > 0.8
    assert doc["comparable"] is False and "not the standard" in doc["comparability"]
    rep = json.loads((out / "report.json").read_text())
    acc = rep["results"]["accuracy"]
    assert len(acc["folds"]) == 10 and acc["fold_sizes"] == [6] * 10
    assert acc["mean"] == pytest.approx(np.mean(acc["folds"]))
    # std over the folds with ddof 0, and the LFW protocol's standard error (ddof 1 / sqrt K)
    folds = np.asarray(acc["folds"])
    assert acc["std"] == pytest.approx(np.sqrt(((folds - folds.mean()) ** 2).mean()))
    se = np.sqrt(((folds - folds.mean()) ** 2).sum() / 9) / np.sqrt(10)
    assert acc["standard_error"] == pytest.approx(se) and acc["std_ddof"] == 0
    assert doc["summary"]["accuracy_se_ddof1"] == pytest.approx(se)
    assert doc["summary"]["accuracy_std_ddof0"] == pytest.approx(acc["std"])
    # The report's numbers are those of the metric functions on the saved scores.
    with np.load(out / "scores.npz") as z:
        kf = M.kfold_accuracy(z["score"], z["same"], z["fold"])
        assert kf.accuracy.tolist() == acc["folds"]
        assert M.auc(M.roc_curve(z["score"], z["same"])) == rep["results"]["auc"]
    assert {i["role"] for i in rep["inputs"]} == {"embeddings", "pairs"}
    assert all(len(i["sha256"]) == 64 for i in rep["inputs"])
    for png in ("roc.png", "det.png", "hist.png"):
        assert_png(out / png)
    m = read_manifest(out, stage="verify")
    assert set(m.extra["files"]) >= {"report.json", "roc.npz", "roc.png", "missing.csv"}
    assert m.counts["processed"] == 60
    r = runner.invoke(app, ["inspect", str(out), "--verify", "--json"])
    assert r.exit_code == 0, r.output
    # Same config and inputs: a no-op; another config needs --force.
    r = invoke(mini_emb, "--pairs", lfw_mini / "pairs.txt", "-o", out, "--json")
    assert json.loads(r.stdout)["reused"] is True
    r = invoke(mini_emb, "--pairs", lfw_mini / "pairs.txt", "-o", out, "--metric", "euclidean")
    assert r.exit_code == 1 and "--force" in r.output
    r = invoke(mini_emb, "--pairs", lfw_mini / "pairs.txt", "-o", out, "--metric", "euclidean",
               "--force", "--pca", "16")  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["metric"] == "euclidean" and rep["pca_dim"] == 16


def test_missing_embeddings_are_reported_not_dropped_silently(tmp_path, lfw_mini):
    pl = read_lfw_pairs(lfw_mini / "pairs.txt")
    keys = pair_keys(lfw_mini / "pairs.txt")
    gone, failed = keys[3], keys[10]
    present = [k for k in keys if k != gone]
    status = ["no_face" if k == failed else "ok" for k in present]
    emb = make_embed_artifact(tmp_path, present, identity_vectors(present), status)
    out = tmp_path / "rep"
    r = invoke(emb, "--pairs", lfw_mini / "pairs.txt", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    n_bad = sum(bool({a, b} & {gone, failed}) for a, b in zip(pl.a, pl.b, strict=True))
    assert doc["missing"]["n_pairs_dropped"] == n_bad > 0
    assert doc["comparable"] is False and "dropped" in doc["comparability"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["missing"]["images"] == {gone: "not in embeddings", failed: "no_face"}
    assert rep["results"]["n_pairs"] == 60 - n_bad
    listed = (out / "missing.csv").read_text().splitlines()
    assert listed[0] == "item,kind,reason" and len(listed) == 1 + n_bad
    assert sum(rep_n for rep_n in read_manifest(out).counts["skipped"].values()) == n_bad


def test_view1_threshold_from_dev_train(tmp_path, lfw_mini, mini_emb):
    pl = read_lfw_pairs(lfw_mini / "pairs.txt")

    def write(name, folds):
        idx = [i for i in range(len(pl)) if pl.fold[i] in folds]
        m = [i for i in idx if pl.same[i]]
        d = [i for i in idx if not pl.same[i]]
        lines = [str(len(m))]
        for i in m:
            name_a, na = pl.a[i].split("/")[1].rsplit("_", 1)
            lines.append(f"{name_a}\t{int(na)}\t{int(pl.b[i].rsplit('_', 1)[1])}")
        for i in d:
            (name_a, na), (name_b, nb) = (
                x.split("/")[1].rsplit("_", 1) for x in (pl.a[i], pl.b[i])
            )
            lines.append(f"{name_a}\t{int(na)}\t{name_b}\t{int(nb)}")
        (tmp_path / name).write_text("\n".join(lines) + "\n")

    write("pairsDevTrain.txt", range(5))
    write("pairsDevTest.txt", range(5, 10))
    out = tmp_path / "v1"
    r = invoke(mini_emb, "-p", "lfw-view1", "--pairs", tmp_path / "pairsDevTest.txt", "-o", out)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    acc = rep["results"]["accuracy"]
    assert acc["n_train_pairs"] == 30 and rep["results"]["n_pairs"] == 30
    with np.load(out / "scores.npz") as z:
        assert acc["mean"] == M.accuracy_at(z["score"], z["same"], acc["threshold"])
    assert {i["role"] for i in rep["inputs"]} == {"embeddings", "pairs", "train_pairs"}
    # A View 1 file is refused by the 10-fold protocol.
    r = invoke(mini_emb, "--pairs", tmp_path / "pairsDevTest.txt", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "lfw-view1" in r.output


def test_user_pairs_csv_by_path(tmp_path, lfw_mini, mini_emb):
    pl = read_lfw_pairs(lfw_mini / "pairs.txt")
    csv = tmp_path / "pairs.csv"
    rows = ["image1,image2,same"]
    # The fixture artifact's source paths are /data/lfw/<key>.jpg; use both spellings.
    rows += [
        f"/data/lfw/{a}.jpg,{b}.jpg,{int(s)}" for a, b, s in zip(pl.a, pl.b, pl.same, strict=True)
    ]
    csv.write_text("\n".join(rows) + "\n")
    r = invoke(mini_emb, "-p", "pairs", "--pairs", csv, "--folds", "5", "-o", tmp_path / "u",
               "--json", "--far", "0.1")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["comparable"] is None and doc["missing"]["n_pairs_dropped"] == 0
    assert "tar@far=0.1" in doc["summary"]
    rep = json.loads((tmp_path / "u" / "report.json").read_text())
    assert len(rep["results"]["accuracy"]["folds"]) == 5


def test_plain_npz_input(tmp_path, lfw_mini):
    keys = pair_keys(lfw_mini / "pairs.txt")
    f = tmp_path / "emb.npz"
    np.savez(f, embeddings=identity_vectors(keys), keys=np.array(keys))
    r = invoke(f, "--pairs", lfw_mini / "pairs.txt", "-o", tmp_path / "r", "--json", "--no-plots")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "r" / "roc.png").exists()


def test_identify_closed_and_open_set(tmp_path):
    ids = [f"P{i:02d}" for i in range(12)]
    keys = [f"{p}/{p}_{n:04d}" for p in ids for n in range(1, 4)]
    emb = make_embed_artifact(tmp_path, keys, identity_vectors(keys, dim=16, noise=0.3, seed=1))
    gallery = tmp_path / "gallery.txt"
    probe = tmp_path / "probe.txt"
    gallery.write_text("\n".join(f"{p}/{p}_0001" for p in ids[:8]) + "\n")
    probes = [k for k in keys if not k.endswith("_0001") or k.split("/")[0] in ids[8:]]
    probe.write_text("\n".join(probes + ["NOPE/NOPE_0001"]) + "\n")
    out = tmp_path / "id"
    r = invoke(emb, "-p", "identify", "--gallery", gallery, "--probe", probe, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    rep = json.loads((out / "report.json").read_text())
    res = rep["results"]
    assert res["n_gallery"] == 8 and res["n_genuine_probes"] == 16
    assert res["n_impostor_probes"] == 12
    assert doc["summary"]["closed_set_rank1"] > 0.9  # low noise: nearly perfect
    assert "dir@far=0.01,rank=1" in doc["summary"]
    assert rep["missing"]["images"] == {"NOPE/NOPE_0001": "not in embeddings"}
    assert_png(out / "dir.png")
    r = invoke(emb, "-p", "identify", "--gallery", gallery, "--probe", probe, "-o", out,
               "--pca", "4", "--force")  # fmt: skip
    assert r.exit_code == 2 and "--pca" in r.output


def test_identify_gallery_folder_counts_hidden_files(tmp_path):
    """B59: a gallery folder is listed like align's input: its images matched by
    <folder>/<stem>, a link loop recorded as a missing image, hidden files one counted row."""
    ids = [f"P{i:02d}" for i in range(6)]
    keys = [f"{p}/{p}_{n:04d}" for p in ids for n in range(1, 3)]
    emb = make_embed_artifact(tmp_path, keys, identity_vectors(keys, dim=8, noise=0.3, seed=2))
    gal = tmp_path / "gal"
    for p in ids[:4]:
        (gal / p).mkdir(parents=True)
        (gal / p / f"{p}_0001").write_bytes(b"x")  # no extension: listed all the same
    (gal / ".cache").mkdir()
    (gal / ".cache" / "a.jpg").write_bytes(b"x")
    (gal / ".DS_Store").write_bytes(b"x")
    (gal / "again").symlink_to(gal / "P00", target_is_directory=True)
    probe = tmp_path / "probe.txt"
    probe.write_text("\n".join(k for k in keys if k.endswith("_0002")) + "\n")
    out = tmp_path / "id"
    r = invoke(emb, "-p", "identify", "--gallery", gal, "--probe", probe, "-o", out)
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["results"]["n_gallery"] == 4
    assert rep["missing"]["images"] == {str(gal / "again"): "link_loop"}
    rows = (out / "missing.csv").read_text().splitlines()
    assert f"{gal},gallery folder,ignored_hidden: 2 files" in rows


def _mini_blufr(tmp_path, n_ids=30, per_id=4, trials=2, seed=0):
    """A BLUFR-shaped .mat: image list, labels, and per trial train/test/gallery/probe cells."""
    import scipy.io

    rng = np.random.default_rng(seed)
    names = [f"P{i:03d}" for i in range(n_ids)]
    files = [f"{p}_{n:04d}.jpg" for p in names for n in range(1, per_id + 1)]
    labels = np.repeat(np.arange(1, n_ids + 1), per_id)

    def cell(arrs):
        c = np.empty((len(arrs), 1), dtype=object)
        for i, a in enumerate(arrs):
            c[i, 0] = (np.asarray(a) + 1).astype(np.uint16).reshape(-1, 1)  # 1-based
        return c

    tr, te, ga, pr = [], [], [], []
    for _ in range(trials):
        perm = rng.permutation(n_ids)
        train_ids, test_ids = perm[:10], perm[10:]
        idx = np.arange(len(files))
        train = idx[np.isin(labels - 1, train_ids)]
        test = idx[np.isin(labels - 1, test_ids)]
        gal_ids = test_ids[:12]
        gal = np.array([np.flatnonzero(labels - 1 == g)[0] for g in gal_ids])
        probe = np.setdiff1d(test, gal)
        for lst, arr in ((tr, train), (te, test), (ga, gal), (pr, probe)):
            lst.append(arr)
    image_list = np.empty((len(files), 1), dtype=object)
    for i, f in enumerate(files):
        image_list[i, 0] = np.array([f])
    mat = tmp_path / "blufr_mini.mat"
    scipy.io.savemat(
        mat,
        {
            "imageList": image_list,
            "labels": labels.reshape(-1, 1).astype(np.uint16),
            "trainIndex": cell(tr),
            "testIndex": cell(te),
            "galIndex": cell(ga),
            "probIndex": cell(pr),
        },
    )
    keys = [f"{f.rsplit('_', 1)[0]}/{f[:-4]}" for f in files]
    return mat, keys, labels, (tr, te, ga, pr)


def test_blufr_end_to_end_matches_direct_computation(tmp_path):
    mat, keys, labels, (tr, te, ga, pr) = _mini_blufr(tmp_path)
    vecs = identity_vectors(keys, dim=16, noise=1.0, seed=3)
    emb = make_embed_artifact(tmp_path, keys, vecs)
    out = tmp_path / "b"
    r = invoke(emb, "-p", "blufr", "--config", mat, "-o", out, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    vr, dirs = [], []
    for t in range(2):
        x = vecs[te[t]].astype(np.float64)
        s = O.score_matrix(x, x)
        lab = labels[te[t]]
        i, j = np.tril_indices(len(x), -1)
        same = lab[i] == lab[j]
        vr.append(M.far_thresholds(s[i, j][same], s[i, j][~same], [1e-3]).rate[0])
        g = O.score_matrix(vecs[ga[t]].astype(np.float64), vecs[pr[t]].astype(np.float64))
        dirs.append(O.open_set_identification(g, labels[ga[t]], labels[pr[t]], [0.01]).dir[0, 0])
        assert rep["results"]["trials"][t]["vr"] == pytest.approx(vr[-1], abs=1e-9)
        assert rep["results"]["trials"][t]["dir"] == pytest.approx(dirs[-1], abs=1e-9)
    stats = rep["results"]["vr@far=0.001"]
    assert stats["mean"] == pytest.approx(np.mean(vr))
    assert stats["mean_minus_std"] == pytest.approx(np.mean(vr) - np.std(vr, ddof=1))
    assert rep["results"]["dir@far=0.01,rank=1"]["mean"] == pytest.approx(np.mean(dirs))
    assert rep["comparable"] is False  # 2 trials, not 10
    for png in ("roc.png", "det.png", "hist.png", "blufr_vr.png", "blufr_dir.png"):
        assert_png(out / png)


def test_blufr_perfect_embeddings_and_a_missing_image(tmp_path):
    mat, keys, labels, _ = _mini_blufr(tmp_path, trials=1)
    vecs = np.eye(64)[labels - 1][:, :64] + 0.0  # one orthogonal direction per identity
    emb = make_embed_artifact(tmp_path, keys[1:], vecs[1:])  # the first image is missing
    r = invoke(emb, "-p", "blufr", "--config", mat, "-o", tmp_path / "b", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["summary"]["vr@far=0.001 mean"] == 1.0
    assert doc["summary"]["dir@far=0.01,rank=1 mean"] == 1.0
    assert doc["missing"]["n_images_missing"] == 1
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["missing"]["images"] == {keys[0]: "not in embeddings"}


def test_compare_overlays_runs(tmp_path, lfw_mini, mini_emb):
    outs = []
    for metric in ("cosine", "euclidean"):
        out = tmp_path / metric
        r = invoke(mini_emb, "--pairs", lfw_mini / "pairs.txt", "-o", out, "--metric", metric)
        assert r.exit_code == 0, r.output
        outs.append(out)
    cmp_dir = tmp_path / "cmp"
    r = invoke("--compare", *outs, "-o", cmp_dir, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [run["label"] for run in doc["runs"]] == ["cosine", "euclidean"]
    assert doc["same_protocol"] is True
    for run, out in zip(doc["runs"], outs, strict=True):
        assert run["summary"] == json.loads((out / "report.json").read_text())["summary"]
    assert_png(cmp_dir / "roc_compare.png")
    assert_png(cmp_dir / "det_compare.png")
    r = invoke("--compare", cmp_dir, "-o", tmp_path / "cmp2")
    assert r.exit_code == 1 and "comparison" in r.output


@pytest.mark.parametrize(
    "args, code, msg",
    [
        ([], 2, "needs --pairs"),
        (["-p", "blufr"], 2, "needs --config"),
        (["-p", "identify", "--gallery", "g"], 2, "needs --probe"),
        (["--pairs", "p.txt", "--config", "c.mat"], 2, "--config is not used"),
        (["--pairs", "nope.txt"], 1, "input not found"),
        (["--pairs", "p.txt", "--folds", "1"], 2, "below 2"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, mini_emb, args, code, msg, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("1\nA\t1\t2\nA\t1\tB\t1\n")
    r = invoke(mini_emb, *args, "-o", tmp_path / "o")
    assert r.exit_code == code, r.output
    assert msg in r.output and "Traceback" not in r.output


def test_two_inputs_without_compare_is_a_usage_error(tmp_path, mini_emb):
    r = invoke(mini_emb, mini_emb, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "--compare" in r.output


@pytest.mark.slow
def test_blufr_on_the_real_config_with_synthetic_embeddings(tmp_path, shared_data):
    from facecl.verify.protocols import read_blufr_config

    mat = shared_data / "blufr" / "blufr_lfw_config.mat"
    conf = read_blufr_config(mat)
    keys = conf.keys[1:]  # drop one image: the result must say it is not comparable
    emb = make_embed_artifact(tmp_path, keys, identity_vectors(keys, dim=64, noise=1.0))
    out = tmp_path / "blufr"
    r = invoke(emb, "-p", "blufr", "--config", mat, "-o", out, "--json", "--no-plots")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    trials = rep["results"]["trials"]
    assert len(trials) == 10
    dropped = conf.keys[0]
    for t, trial in zip(trials, conf.trials, strict=True):
        assert t["n_test"] + t["n_test_missing"] == len(trial.test)
        assert t["n_test_missing"] == int(0 in trial.test)
        assert t["n_gallery"] == 1000 - int(0 in trial.gallery)
    assert rep["missing"]["images"] == {dropped: "not in embeddings"}
    assert rep["comparable"] is (not any(0 in tr.test for tr in conf.trials))
    assert 0 < rep["summary"]["vr@far=0.001 mean"] <= 1


def test_protocol_choices_are_the_registry(tmp_path, mini_emb):
    from typing import get_args

    from facecl.cliconfig import leaves
    from facecl.verify.config import VerifyConfig
    from facecl.verify.evaluate import PROTOCOLS

    (protocol,) = [lf for lf in leaves(VerifyConfig) if lf.flag == "--protocol"]
    literal = [a for a in get_args(get_args(protocol.annotation)[0]) if a is not type(None)]
    assert list(get_args(literal[0])) == PROTOCOLS.names()
    r = invoke(mini_emb, "-p", "lfw-view2", "-o", tmp_path / "o")
    assert r.exit_code == 2
    assert ", ".join(f"'{n}'" for n in PROTOCOLS.names()) in " ".join(
        r.output.replace("│", " ").split()
    )
