"""Flip fusion and preprocessing against hand-computed results on a tiny backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecl.embed.features import (
    FUSIONS,
    FlipFusion,
    flip_features,
    fused_dim,
    l2_normalize,
    preprocess,
)
from facecl.errors import UnknownNameError
from facecl.models import create_backbone


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(3)
    return create_backbone("tiny", feature_dim=8).eval()


@pytest.fixture(scope="module")
def x():
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 3, 112, 96, generator=g) * 2 - 1  # (B,3,H,W)


def mirrored(x: torch.Tensor) -> torch.Tensor:
    """The horizontal mirror, written out column by column (not via flip)."""
    w = x.shape[3]
    return torch.stack([x[..., w - 1 - j] for j in range(w)], dim=3)


def test_concat_is_fc1_of_image_then_of_its_mirror(net, x):
    with torch.no_grad():
        a, b = net(x), net(mirrored(x))
        got = flip_features(net, x, "concat")
    assert got.shape == (5, 16)
    torch.testing.assert_close(got[:, :8], a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[:, 8:], b, rtol=1e-5, atol=1e-6)
    # A mirrored face gives the halves swapped.
    with torch.no_grad():
        swapped = flip_features(net, mirrored(x), "concat")
    torch.testing.assert_close(swapped, torch.cat([got[:, 8:], got[:, :8]], 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "fusion,expect",
    [("sum", lambda a, b: a + b), ("mean", lambda a, b: (a + b) / 2), ("none", lambda a, b: a)],
)
def test_other_fusions(net, x, fusion, expect):
    with torch.no_grad():
        a, b = net(x), net(mirrored(x))
        got = flip_features(net, x, fusion)
    assert got.shape == (5, fused_dim(8, fusion)) == (5, 8)
    torch.testing.assert_close(got, expect(a, b), rtol=1e-5, atol=1e-6)


def test_l2_rows_are_unit_and_direction_kept(net, x):
    with torch.no_grad():
        raw = flip_features(net, x, "concat")
        unit = flip_features(net, x, "concat", l2=True)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(5))
    cos = torch.nn.functional.cosine_similarity(raw, unit)
    torch.testing.assert_close(cos, torch.ones(5))
    assert torch.isfinite(l2_normalize(torch.zeros(2, 4))).all()


def test_flip_fusion_module_matches_function(net, x):
    mod = FlipFusion(net, "mean", l2=True).eval()
    assert mod.feature_dim == 8 and mod.input_size == (112, 96)
    with torch.no_grad():
        torch.testing.assert_close(mod(x), flip_features(net, x, "mean", l2=True))
    assert FlipFusion(net, "concat").feature_dim == 16


def test_unknown_fusion_names_the_valid_ones():
    with pytest.raises(UnknownNameError, match="concat"):
        fused_dim(8, "cat")
    assert FUSIONS.names() == ["concat", "mean", "none", "sum"]


def test_preprocess_rgb_nchw_and_scaling():
    img = np.zeros((2, 112, 96, 3), np.uint8)
    img[0, ..., 0] = 255  # pure red image
    img[1, 10, 20] = (0, 128, 255)
    x = preprocess(img)
    assert x.shape == (2, 3, 112, 96) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.allclose(x[0, 0], 127.5 / 128) and np.allclose(x[0, 1:], -127.5 / 128)
    assert x[1, :, 10, 20].tolist() == [(0 - 127.5) / 128, (128 - 127.5) / 128, 127.5 / 128]
    with pytest.raises(ValueError):
        preprocess(np.zeros((112, 96, 3), np.uint8))
