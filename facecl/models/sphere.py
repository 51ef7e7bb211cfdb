"""The 112x96 face CNNs of IJCV Table 4 (the SphereFace nets): conv + PReLU residual units.

Each of the four stages starts with a 3x3 stride-2 convolution (+PReLU) that halves the
resolution and sets the width (64, 128, 256, 512), followed by ``units[k]`` residual units of
two 3x3 stride-1 convolutions (+PReLU each) with an identity shortcut. FC1 maps the
512 x 7 x 6 map (for 112x96) to the feature (512-d). No batch norm, as in the papers.

The depth in the name counts convolutions: 4 + 2 * sum(units). IJCV Table 4 (as extracted in
``../shared/papers``) lost the residual multipliers of some cells, so the unit counts are
those of SphereFace (Liu et al. 2017, Table 2), which IJCV's nets follow ("constructed by
adding (or removing) a few residual blocks to (or from) the backbone network"):

    sphere4  (0, 0, 0, 0)   sphere10 (0, 1, 2, 0)   sphere20 (1, 2, 4, 1)
    sphere36 (2, 4, 8, 2)   sphere64 (3, 8, 16, 3)

Initialisation as the released SphereFace prototxts: Xavier for the stride-2 convolutions and
FC1, N(0, 0.01^2) for the convolutions inside residual units, zero biases.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from facecl.models import register_backbone

SPHERE_UNITS: dict[int, tuple[int, int, int, int]] = {
    4: (0, 0, 0, 0),
    10: (0, 1, 2, 0),
    20: (1, 2, 4, 1),
    36: (2, 4, 8, 2),
    64: (3, 8, 16, 3),
}
SPHERE_WIDTHS = (64, 128, 256, 512)


def _conv_out(size: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ResidualUnit(nn.Module):
    """x + PReLU(conv(PReLU(conv(x)))), two 3x3 stride-1 convolutions, width kept."""

    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, 1, 1)
        self.relu1 = nn.PReLU(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.relu2 = nn.PReLU(width)
        for conv in (self.conv1, self.conv2):
            nn.init.normal_(conv.weight, 0.0, 0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, W, H, W') -> same
        return x + self.relu2(self.conv2(self.relu1(self.conv1(x))))


class SphereNet(nn.Module):
    """Configurable sphere net: ``units`` residual units per stage after each stride-2 conv."""

    def __init__(
        self,
        units: Sequence[int] = SPHERE_UNITS[20],
        widths: Sequence[int] = SPHERE_WIDTHS,
        feature_dim: int = 512,
        input_size: tuple[int, int] = (112, 96),
        in_channels: int = 3,
    ):
        super().__init__()
        if len(units) != len(widths):
            raise ValueError(f"units {tuple(units)} and widths {tuple(widths)} differ in length")
        self.feature_dim = int(feature_dim)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.depth = len(widths) + 2 * sum(units)
        layers: list[nn.Module] = []
        h, w = self.input_size
        prev = in_channels
        for n_units, width in zip(units, widths, strict=True):
            down = nn.Conv2d(prev, width, 3, 2, 1)
            nn.init.xavier_uniform_(down.weight)
            if down.bias is not None:
                nn.init.zeros_(down.bias)
            layers += [down, nn.PReLU(width)]
            layers += [ResidualUnit(width) for _ in range(n_units)]
            h, w = _conv_out(h), _conv_out(w)
            prev = width
        self.body = nn.Sequential(*layers)
        self.fc1 = nn.Linear(prev * h * w, self.feature_dim)  # 512*7*6 -> 512 for 112x96
        nn.init.xavier_uniform_(self.fc1.weight)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, feature_dim)
        return self.fc1(self.body(x).flatten(1))


def _sphere_factory(depth: int):
    def make(
        feature_dim: int = 512, input_size: tuple[int, int] = (112, 96), in_channels: int = 3
    ) -> nn.Module:
        return SphereNet(SPHERE_UNITS[depth], SPHERE_WIDTHS, feature_dim, input_size, in_channels)

    make.__name__ = f"sphere{depth}"
    make.__doc__ = f"IJCV Table 4 {depth}-layer net (residual units {SPHERE_UNITS[depth]})."
    return make


for _depth in SPHERE_UNITS:
    register_backbone(f"sphere{_depth}")(_sphere_factory(_depth))
