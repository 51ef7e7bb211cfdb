"""`facecl pack ROOT --prealigned`: crops laid out as ROOT/<identity>/<image> packed without
align; one size (112x96 or 112x112) or an error naming the file; a 112x112 pack trains and
its checkpoint records that geometry."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
from facecl.pack.config import PackConfig
from facecl.pack.dataset import ShardDataset, iter_pack_images
from facecl.pack.stage import run_pack
from facecl.train.checkpoint import checkpoint_input_spec, load_checkpoint
from facecl.train.config import load_train_config
from facecl.train.stage import run_train

from .helpers import centre_crop, lfw_mini_people

PEOPLE = ["Ali_Naimi", "Alec_Baldwin", "Alejandro_Toledo"]


def crop_folder(root: Path, size: tuple[int, int], per_id: int = 4) -> dict[str, np.ndarray]:
    """ROOT/<identity>/<stem>.png centre crops of lfw_mini faces; returns key -> RGB."""
    out = {}
    for ident, files in lfw_mini_people(PEOPLE, per_id).items():
        (root / ident).mkdir(parents=True)
        for f in files:
            img = centre_crop(f, size)
            cv2.imwrite(str(root / ident / f"{f.stem}.png"), img[..., ::-1])
            out[f"{ident}/{f.stem}"] = img
    return out


@pytest.mark.parametrize("size", [(112, 96), (112, 112)])
def test_prealigned_crops_round_trip(tmp_path, size):
    root = tmp_path / "crops"
    want = crop_folder(root, size)
    (root / "README.txt").write_text("not a crop")
    (root / PEOPLE[0] / "notes.txt").write_text("not an image")
    r = CliRunner().invoke(app, ["pack", str(root), "--prealigned", "-o", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    got = {k: img for k, img, _ in iter_pack_images(tmp_path / "p")}
    assert sorted(got) == sorted(want)
    for k, img in got.items():
        np.testing.assert_array_equal(img, want[k])
    ds = ShardDataset(tmp_path / "p")
    assert ds.input_spec == InputSpec.for_template(f"{size[0]}x{size[1]}")
    assert ds.class_names == sorted(PEOPLE)
    with open(tmp_path / "p" / "skipped.csv") as f:
        reasons = sorted(row["reason"] for row in csv.DictReader(f))
    assert reasons == ["not_image", "not_in_identity_folder"]


def test_a_crop_of_another_size_is_an_error_naming_it(tmp_path):
    root = tmp_path / "crops"
    crop_folder(root, (112, 112), per_id=2)
    odd = root / PEOPLE[2] / "odd.png"
    cv2.imwrite(str(odd), np.zeros((112, 96, 3), np.uint8))
    with pytest.raises(InputError, match=r"odd\.png is 112x96 but .* is 112x112"):
        run_pack([root], tmp_path / "p", PackConfig(prealigned=True))
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()


def test_crops_must_be_one_of_the_template_sizes(tmp_path):
    root = tmp_path / "crops"
    (root / "someone").mkdir(parents=True)
    cv2.imwrite(str(root / "someone" / "a.jpg"), np.zeros((128, 128, 3), np.uint8))
    r = CliRunner().invoke(app, ["pack", str(root), "--prealigned", "-o", str(tmp_path / "p")])
    assert r.exit_code == 1 and "a.jpg is 128x128" in r.stderr and "112x112" in r.stderr
    assert "Traceback" not in r.output


def test_a_112x112_pack_trains_and_its_checkpoint_records_the_geometry(tmp_path):
    root = tmp_path / "crops"
    crop_folder(root, (112, 112), per_id=3)
    pack = run_pack([root], tmp_path / "p", PackConfig(prealigned=True)).path
    base = {"arch": "tiny", "steps": 3, "batch_size": 4, "workers": 0, "log_every": 1}
    cfg = load_train_config(None, base)
    res = run_train(pack, tmp_path / "run", cfg, show_progress=False)
    ckpt = load_checkpoint(res.path / "model.pt")
    spec = checkpoint_input_spec(ckpt)
    assert spec == InputSpec.for_template("112x112") and spec.size == (112, 112)
    assert ckpt["arch_kwargs"]["input_size"] == [112, 112]


def test_names_is_only_for_recordio(tmp_path):
    root = tmp_path / "crops"
    crop_folder(root, (112, 112), per_id=1)
    names = tmp_path / "names.txt"
    names.write_text("0\tsomeone\n")
    args = ["pack", str(root), "--prealigned", "--names", str(names), "-o", str(tmp_path / "p")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--names maps the class ids of a RecordIO input" in r.stderr
