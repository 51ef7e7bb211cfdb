"""Augmentation presets and the transform text form, on real packed face crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecl.errors import ConfigError
from facecl.pack.augment import PRESETS, expand, parse_transform
from facecl.pack.config import PackConfig
from facecl.pack.dataset import ShardDataset, build_augment
from facecl.pack.stage import run_pack


@pytest.fixture(scope="module")
def pack(aligned, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "p"
    return run_pack([aligned], out, PackConfig(shard_size=30, val_fraction=0.25, seed=1)).path


def test_parse_transform_reads_literals_only():
    assert parse_transform("ToGray") == ("ToGray", {})
    assert parse_transform("GaussianBlur(blur_limit=(3, 5), p=0.2)") == (
        "GaussianBlur",
        {"blur_limit": (3, 5), "p": 0.2},
    )
    for bad in ("GaussianBlur(p=__import__('os').system('true'))", "Blur(3)", "a.b(p=1)", "(("):
        with pytest.raises(ConfigError):
            parse_transform(bad)


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_presets_build_and_keep_the_crop_size(pack, preset):
    ds = ShardDataset(pack, transform=[preset])
    names = [type(t).__name__ for t in ds.transform.transform.transforms]
    assert names[0] == "RandomResizedCrop" and "ColorJitter" in names and "ToGray" in names
    if preset == "strong":
        assert {"GaussianBlur", "Downscale"} <= set(names)
    torch.manual_seed(0)
    x, _ = ds[0]
    assert x.shape == (3, *ds.image_size) and x.dtype == torch.float32


def test_none_adds_no_pipeline_and_presets_combine_with_transforms(pack):
    assert ShardDataset(pack, transform=["none"]).transform is None
    specs = expand(["light", "CLAHE(p=0.1)"], (112, 96))
    assert len(specs) == len(PRESETS["light"](112, 96)) + 1 and specs[-1] == ("CLAHE", {"p": 0.1})
    assert len(build_augment(["light", "CLAHE(p=0.1)"]).transforms) == len(specs)


def test_seeded_and_deterministic(pack):
    """Same torch seed -> the same augmented images; another seed -> other images; and the
    strong preset does change the images."""

    def images(seed: int) -> np.ndarray:
        torch.manual_seed(seed)
        ds = ShardDataset(pack, transform=["strong"])
        return np.stack([ds[i][0].numpy() for i in range(12)])

    a, b, c = images(0), images(0), images(1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    plain = ShardDataset(pack)
    assert not np.array_equal(a, np.stack([plain[i][0].numpy() for i in range(12)]))
