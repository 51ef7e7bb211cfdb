"""Backbones: registry-parametrised forward/backward, output shapes, layer counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facecl.errors import UnknownNameError
from facecl.models import create_backbone, list_backbones
from facecl.models.sphere import SPHERE_UNITS

torch.set_num_threads(2)
HEAVY = {"sphere36", "sphere64"}  # seconds per forward/backward on a loaded 2-core CPU


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in list_backbones()],
)
def test_every_backbone_forward_backward_no_nan(name):
    torch.manual_seed(0)
    model = create_backbone(name)
    h, w = model.input_size
    channels = getattr(model, "in_channels", 3)
    x = torch.randn(1, channels, h, w)
    out = model(x)
    assert out.shape == (1, model.feature_dim)
    out.pow(2).sum().backward()
    assert torch.isfinite(out).all()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("depth", sorted(SPHERE_UNITS))
def test_sphere_nets_112x96_to_512_and_depth_is_the_conv_count(depth):
    model = create_backbone(f"sphere{depth}")
    assert model.input_size == (112, 96) and model.feature_dim == 512
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth == model.depth
    assert all(m.kernel_size == (3, 3) for m in convs)
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == depth  # every convolution is followed by a PReLU
    assert model.fc1.in_features == 512 * 7 * 6  # four stride-2 stages: 112x96 -> 7x6
    if f"sphere{depth}" not in HEAVY:  # (the heavy ones run in the slow registry test)
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 112, 96)).shape == (1, 512)


def test_sphere_feature_dim_and_input_size_kwargs():
    model = create_backbone("sphere4", feature_dim=128, input_size=(112, 112))
    assert model.feature_dim == 128 and model.input_size == (112, 112)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 128)


def test_sphere_residual_unit_is_identity_plus_branch():
    model = create_backbone("sphere10")
    unit = next(m for m in model.modules() if m.__class__.__name__ == "ResidualUnit")
    for p in unit.conv2.parameters():  # zero the branch's last conv: the unit is the identity
        nn.init.zeros_(p)
    x = torch.randn(1, unit.conv1.in_channels, 5, 4)
    with torch.no_grad():
        assert torch.equal(unit(x), x)


def test_lenetpp_mnist_shapes_and_table1_layout():
    model = create_backbone("lenetpp")
    assert model.input_size == (28, 28) and model.feature_dim == 2 and model.in_channels == 1
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    with torch.no_grad():
        assert model(torch.randn(4, 1, 28, 28)).shape == (4, 2)
    rgb = create_backbone("lenetpp", in_channels=3, feature_dim=3)
    with torch.no_grad():
        assert rgb(torch.randn(2, 3, 28, 28)).shape == (2, 3)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        create_backbone("sphere21")
    msg = str(e.value)
    assert "did you mean 'sphere20'" in msg
    assert all(n in msg for n in ["sphere4", "sphere64", "lenetpp", "tiny"])
