"""ShardDataset, the sampler and iter_pack_images over a real pack of fixture faces."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from facecl.errors import ConfigError, UnknownNameError
from facecl.pack.config import PackConfig
from facecl.pack.dataset import (
    ShardDataset,
    build_augment,
    iter_pack_images,
)
from facecl.pack.stage import run_pack

from .helpers import lfw_mini_people, make_align_artifact, read_png_rgb


@pytest.fixture(scope="module")
def pack(aligned, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "p"
    return run_pack([aligned], out, PackConfig(shard_size=30, val_fraction=0.25, seed=1)).path


def _digest(img_u8: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img_u8).tobytes()).hexdigest()


def _to_u8(x: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: (3, H, W) float -> (H, W, 3) uint8."""
    return (x * 128 + 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_item_contract(pack, aligned):
    ds = ShardDataset(pack, split="train")
    classes = json.loads((pack / "classes.json").read_text())["classes"]
    assert ds.num_classes == len(classes) and ds.image_size == (112, 96)
    assert ds.class_names == sorted(classes)
    assert len(ds) == sum(c["train"] for c in classes.values()) == len(ds.labels)
    assert ds.labels.dtype == np.int64
    for i in (0, len(ds) // 2, len(ds) - 1):
        x, y = ds[i]
        assert x.shape == (3, 112, 96) and x.dtype == torch.float32 and x.is_contiguous()
        assert isinstance(y, int) and y == ds.labels[i]
        key = ds.key(i)
        assert ds.class_names[y] == key.split("/")[0]
        png = read_png_rgb(aligned / "aligned" / f"{key}.png").astype(np.float32)
        expected = (png - 127.5) / 128.0  # (H, W, 3) RGB
        np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    with pytest.raises(IndexError):
        ds[len(ds)]
    val, all_ = ShardDataset(pack, split="val"), ShardDataset(pack, split="all")
    assert len(val) > 0 and len(all_) == len(ds) + len(val) == 176
    with pytest.raises(ConfigError, match="unknown split"):
        ShardDataset(pack, split="test")


def test_two_workers_yield_every_image_exactly_once_per_epoch(pack):
    ds = ShardDataset(pack, split="all")
    expected = Counter((_digest(ds.image(i)), int(ds.labels[i])) for i in range(len(ds)))
    assert len(expected) == len(ds)  # distinct faces, so a digest names one image
    loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=2, persistent_workers=True)
    for _epoch in range(2):
        got = Counter()
        for x, y in loader:  # x: (B, 3, H, W)
            for img, lab in zip(x, y, strict=True):
                got[(_digest(_to_u8(img)), int(lab))] += 1
        assert got == expected


def test_flip_is_random_per_item_and_seeded_by_torch(pack):
    ds = ShardDataset(pack, split="all", flip=True)
    plain = [ds.image(i) for i in range(40)]
    torch.manual_seed(0)
    a = [_to_u8(ds[i][0]) for i in range(40)]
    flipped = [np.array_equal(img, p[:, ::-1]) for img, p in zip(a, plain, strict=True)]
    same = [np.array_equal(img, p) for img, p in zip(a, plain, strict=True)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 5 < sum(flipped) < 35
    torch.manual_seed(0)
    b = [_to_u8(ds[i][0]) for i in range(40)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_albumentations_pipeline_by_name(pack):
    spec = [{"name": "RandomBrightnessContrast", "p": 1.0, "brightness_limit": (0.3, 0.3)}]
    ds = ShardDataset(pack, transform=spec)
    x, _ = ds[0]
    assert x.shape == (3, 112, 96)
    brighter = _to_u8(x).astype(int).mean()
    assert brighter > ds.image(0).astype(int).mean() + 10
    # a plain callable works too
    inv = ShardDataset(pack, transform=lambda im: 255 - im)
    np.testing.assert_array_equal(_to_u8(inv[3][0]), 255 - inv.image(3))
    with pytest.raises(UnknownNameError, match="RandomBrightnessContrast"):
        build_augment("RandomBrightnesContrast")
    with pytest.raises(ConfigError, match="bad arguments"):
        build_augment({"name": "HorizontalFlip", "nonsense": 3})


def test_iter_pack_images_covers_the_pack_in_order(pack):
    items = list(iter_pack_images(pack, batch=7))
    assert len(items) == 176 and len({k for k, _, _ in items}) == 176
    train = list(iter_pack_images(pack, split="train"))
    ds = ShardDataset(pack, split="train")
    for i in (0, 29, 30, len(ds) - 1):  # across a shard boundary
        k, img, lab = train[i]
        assert k == ds.key(i) and lab == ds.labels[i]
        np.testing.assert_array_equal(img, ds.image(i))


def test_dataset_pickles_without_open_handles(pack):
    import pickle

    ds = ShardDataset(pack)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    torch.testing.assert_close(clone[5][0], ds[5][0])


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_every_compression_reads_back_the_aligned_pixels(tmp_path, compression):
    people = lfw_mini_people(["Ali_Naimi", "Abdullah_Gul"])
    art = make_align_artifact(tmp_path, people)
    pack = run_pack([art], tmp_path / "p", PackConfig(compression=compression, shard_size=5)).path
    ds = ShardDataset(pack, split="all")
    assert len(ds) == 13
    for i in range(len(ds)):
        png = read_png_rgb(art / "aligned" / f"{ds.key(i)}.png")
        np.testing.assert_array_equal(ds.image(i), png)


def test_batched_fetch_matches_single_items(pack):
    ds = ShardDataset(pack, split="train")
    idx = [5, 0, 31, len(ds) - 1, 30]  # unsorted, across shards
    batch = ds.__getitems__(idx)
    for (x, y), i in zip(batch, idx, strict=True):
        xi, yi = ds[i]
        assert y == yi and torch.equal(x, xi)
    flipped = ShardDataset(pack, split="train", flip=True)
    torch.manual_seed(3)
    out = flipped.__getitems__(list(range(64)))
    n_flipped = 0
    for j, (x, _) in enumerate(out):
        img, plain = _to_u8(x), ds.image(j)
        n_flipped += np.array_equal(img, plain[:, ::-1])
        assert np.array_equal(img, plain) or np.array_equal(img, plain[:, ::-1])
    assert 10 < n_flipped < 54


def _open_shard_fds(root) -> int:
    """Files under ``root`` this process holds open (from /proc/self/fd)."""
    import os

    fd_dir = "/proc/self/fd"
    n = 0
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # the fd listdir itself used, closed by now
            continue
        n += target.startswith(str(root)) and target.endswith(".h5")
    return n


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc")
def test_open_shards_are_capped_and_every_image_reads_back(aligned, tmp_path):
    """A pack of 44 shards read through a 3-handle cap, in a shuffled order, both by item and
    by batch: every image equals the one iter_pack_images reads, and at no point does the
    process hold more than 3 shard files open."""
    out = run_pack([aligned], tmp_path / "p", PackConfig(shard_size=4)).path
    n_shards = len(list((out / "train").glob("*.h5")))
    assert n_shards == 44
    want = {k: (img, lab) for k, img, lab in iter_pack_images(out, split="all")}
    ds = ShardDataset(out, split="all", max_open=3)
    order = np.random.default_rng(0).permutation(len(ds)).tolist()
    peak = 0
    for i in order:
        x, y = ds[i]
        img, lab = want[ds.key(i)]
        assert y == lab
        np.testing.assert_array_equal(_to_u8(x), img)
        peak = max(peak, _open_shard_fds(out))
    for start in range(0, len(order), 16):
        batch = order[start : start + 16]
        for i, (x, y) in zip(batch, ds.__getitems__(batch), strict=True):
            img, lab = want[ds.key(i)]
            assert y == lab
            np.testing.assert_array_equal(_to_u8(x), img)
        peak = max(peak, _open_shard_fds(out))
    assert peak == 3 == len(ds._handles)
    ds.close()
    assert _open_shard_fds(out) == 0
    with pytest.raises(ConfigError, match="max_open"):
        ShardDataset(out, max_open=0)
