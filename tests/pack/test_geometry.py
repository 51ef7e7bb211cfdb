"""The crop geometry travels: a pack records its align inputs' InputSpec, ShardDataset reads
it back (or derives it for an older pack), and crops of different sizes are refused."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from facecl.artifacts import read_manifest
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
from facecl.pack.artifact import read_input_spec
from facecl.pack.config import PackConfig
from facecl.pack.dataset import ShardDataset, to_tensor
from facecl.pack.stage import run_pack

from .helpers import lfw_mini_people, make_align_artifact, read_png_rgb

PEOPLE = ["Ali_Naimi", "Alec_Baldwin"]


@pytest.mark.parametrize("size", [(112, 96), (112, 112)])
def test_pack_records_input_spec_and_dataset_reads_it(tmp_path, size):
    template = f"{size[0]}x{size[1]}"
    art = make_align_artifact(tmp_path, lfw_mini_people(PEOPLE, 4), size=size)
    pack = run_pack([art], tmp_path / "p", PackConfig(val_fraction=0.25)).path
    m = read_manifest(pack, stage="pack")
    want = InputSpec.for_template(template)
    assert m.extra["input_spec"] == want.to_dict() and m.extra["image_size"] == list(size)
    for split in ("train", "val", "all"):
        ds = ShardDataset(pack, split=split)
        assert ds.input_spec == want and ds.input_spec.size == ds.image_size == size
        assert ds[0][0].shape == (3, *size)
    assert read_input_spec(pack) == want
    assert read_input_spec(pack).template == template


def test_an_older_pack_without_input_spec_gets_it_from_image_size(tmp_path):
    art = make_align_artifact(tmp_path, lfw_mini_people(PEOPLE, 3), size=(112, 112))
    pack = run_pack([art], tmp_path / "p", PackConfig()).path
    mpath = pack / "manifest.json"
    doc = json.loads(mpath.read_text())
    del doc["extra"]["input_spec"]  # as 'facecl pack' wrote it before it recorded one
    mpath.write_text(json.dumps(doc))
    assert ShardDataset(pack).input_spec == InputSpec.for_template("112x112")
    doc["extra"]["image_size"] = [28, 28]  # no align template of that size
    mpath.write_text(json.dumps(doc))
    assert read_input_spec(pack) == InputSpec((28, 28))


def test_mixing_crop_sizes_fails_before_writing(tmp_path):
    a = make_align_artifact(tmp_path, lfw_mini_people(PEOPLE[:1], 2), name="narrow")
    b = make_align_artifact(tmp_path, lfw_mini_people(PEOPLE[1:], 2), size=(112, 112), name="sq")
    with pytest.raises(InputError, match=r"different crop sizes: 112x96 \(narrow\), 112x112 \(sq"):
        run_pack([a, b], tmp_path / "p", PackConfig())
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()


def _rehash(art):
    """Record the crops' current hashes (an align that wrote them so): the sidecar, then
    the manifest's hashes of it and of faces.csv."""
    import json

    from facecl.align.artifact import iter_crop_hashes, write_crop_hashes
    from facecl.artifacts import sha256_file

    write_crop_hashes(art, [out for out, _ in iter_crop_hashes(art)])
    m = json.loads((art / "manifest.json").read_text())
    m["extra"]["files"] = {k: sha256_file(art / k) for k in m["extra"]["files"]}
    (art / "manifest.json").write_text(json.dumps(m))


def test_a_crop_of_another_size_than_its_artifact_says_fails(tmp_path):
    art = make_align_artifact(tmp_path, lfw_mini_people(PEOPLE[:1], 3))
    crops = sorted((art / "aligned").rglob("*.png"))
    cv2.imwrite(str(crops[-1]), np.zeros((112, 112, 3), np.uint8))  # not the first crop
    _rehash(art)
    with pytest.raises(InputError, match="is 112x112, expected 96x112"):
        run_pack([art], tmp_path / "p", PackConfig())
    cv2.imwrite(str(crops[0]), np.zeros((112, 112, 3), np.uint8))
    _rehash(art)
    with pytest.raises(
        InputError,
        match="112 px high and 112 px wide, but its align artifact was made with --size 112x96",
    ):
        run_pack([art], tmp_path / "q", PackConfig())


def test_normalisation_is_the_input_spec_one_bit_for_bit(tmp_path):
    art = make_align_artifact(tmp_path, lfw_mini_people(PEOPLE, 3))
    pack = run_pack([art], tmp_path / "p", PackConfig()).path
    ds = ShardDataset(pack, split="all")
    idx = list(range(len(ds)))
    png = np.stack([read_png_rgb(art / "aligned" / f"{ds.key(i)}.png") for i in idx])
    # (x - 127.5) / 128 as float32, spelled out: the formula every model was trained with
    want = (png.astype(np.float32) - np.float32(127.5)) * np.float32(1 / 128)
    want = torch.from_numpy(want).permute(0, 3, 1, 2)
    got = torch.stack([x for x, _ in ds.__getitems__(idx)])
    assert torch.equal(got, want)
    assert torch.equal(torch.stack([ds[i][0] for i in idx]), want)
    assert torch.equal(to_tensor(png[0]), want[0])
    spec = ds.input_spec
    assert (spec.mean, spec.scale) == (127.5, 128.0)
