"""`facecl toy mnist` on a tiny MNIST directory written from the bundled subset."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.artifacts import read_manifest
from facecl.cli import app
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
from facecl.train.checkpoint import checkpoint_input_spec, load_checkpoint
from facecl.train.toy import (
    BUNDLED,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_NPZ,
    imbalance_indices,
    load_mnist,
    read_idx,
)

runner = CliRunner()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory) -> Path:
    """20 train and 5 test images per digit, in the layout of ../shared/data/mnist."""
    d = tmp_path_factory.mktemp("mnist")
    with np.load(BUNDLED) as z:
        xtr, ytr, xte, yte = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    tr = np.concatenate([np.flatnonzero(ytr == c)[:20] for c in range(10)])
    te = np.concatenate([np.flatnonzero(yte == c)[:5] for c in range(10)])
    np.savez(d / TRAIN_NPZ, x_train=xtr[tr], y_train=ytr[tr])
    _write_idx(d / TEST_IMAGES, xte[te])
    _write_idx(d / TEST_LABELS, yte[te])
    return d


def test_idx_reader_and_loader(mnist_dir, tmp_path):
    m = load_mnist(mnist_dir)
    assert m.x_train.shape == (200, 28, 28) and m.x_test.shape == (50, 28, 28)
    assert np.bincount(m.y_test).tolist() == [5] * 10
    assert read_idx(mnist_dir / TEST_LABELS).dtype == np.uint8
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")  # claims 9 bytes, holds 3
    with pytest.raises(InputError, match="truncated"):
        read_idx(bad)
    with pytest.raises(InputError, match="no MNIST"):
        load_mnist(tmp_path)


def test_imbalance_cuts_the_chosen_classes():
    labels = np.repeat(np.arange(10), 50)
    keep = imbalance_indices(labels, (0, 1, 2, 3, 4), 7, seed=0)
    assert np.bincount(labels[keep]).tolist() == [7] * 5 + [50] * 5
    assert np.array_equal(keep, imbalance_indices(labels, (0, 1, 2, 3, 4), 7, seed=0))


def test_toy_mnist_cli(mnist_dir, tmp_path):
    out = tmp_path / "toy"
    args = ["toy", "mnist", "-o", str(out), "--data", str(mnist_dir), "--loss", "cl"]
    args += ["--rho", "1", "--steps", "3", "--batch-size", "16", "--imbalance"]
    args += ["--imbalance-keep", "4", "--no-progress", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert 0.0 <= doc["test_accuracy"] <= 1.0 and len(doc["test_accuracy_per_class"]) == 10
    assert doc["per_class_train"] == [4] * 5 + [20] * 5
    m = read_manifest(out, stage="train")
    assert m.config["train"]["arch"] == "lenetpp" and m.config["train"]["center"]["rho"] == 1.0
    assert m.config["toy"]["imbalance"] is True
    assert {"features.png", "features.npz", "model.pt"} <= set(m.extra["files"])
    # The grey 28x28 geometry travels with the model (no align template: not a face crop).
    spec = checkpoint_input_spec(load_checkpoint(out / "model.pt"))
    assert spec == InputSpec(size=(28, 28), channels=1, color="L")
    with np.load(out / "features.npz") as z:
        assert z["test_features"].shape == (50, 2) and z["centers"].shape == (10, 2)
    r = runner.invoke(app, ["toy", "mnist", "-o", str(out), "--loss", "nope"])
    assert r.exit_code == 2 and "acl-gamma" in r.output


def test_wu2018_preset_is_wus_caffe_face_set_up(mnist_dir, tmp_path):
    """``--imbalance --preset wu2018``: Wu's LeNet++ (pool3 3x3/2, PReLU on the feature), a
    bias-free classifier, softmax + gamma L_I with the training counts, 100 images of 0-4;
    options given on the command line still win over the preset."""
    out = tmp_path / "wu"
    args = ["toy", "mnist", "-o", str(out), "--data", str(mnist_dir), "--imbalance"]
    args += ["--preset", "wu2018", "--steps", "2", "--imbalance-keep", "5", "--no-progress"]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    m = read_manifest(out, stage="train")
    cfg, toy = m.config["train"], m.config["toy"]
    assert (cfg["arch"], cfg["head"], cfg["head_bias"], cfg["loss"]) == (
        "lenetpp-wu", "softmax", False, "cil"
    )  # fmt: skip
    assert (cfg["lam"], cfg["center"]["gamma"], cfg["center"]["alpha"]) == (0.0, 1e-5, 0.1)
    assert (cfg["batch_size"], cfg["lr"], cfg["lr_factor"]) == (128, 0.01, 0.8)
    assert cfg["lr_drops"] == [0.5, 0.8] and cfg["steps"] == 2  # --steps beat the preset
    assert toy["imbalance_keep"] == 5  # --imbalance-keep beat the preset's 100
    ckpt = load_checkpoint(out / "model.pt")
    assert "fc.bias" not in ckpt["head_state"] and "feature_act.weight" in ckpt["model"]
    assert ckpt["loss_state"]["class_counts"].tolist() == [5] * 5 + [20] * 5
    r = runner.invoke(app, ["toy", "mnist", "-o", str(tmp_path / "x"), "--preset", "wu2019"])
    assert r.exit_code == 2 and "did you mean 'wu2018'" in r.output
