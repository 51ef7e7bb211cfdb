"""LeNet++ of ECCV/IJCV Table 1, the MNIST toy network with a 2-d feature.

Three stages of two 5x5 convolutions (stride 1, padding 2, PReLU each) with 32, 64, 128
filters, each stage followed by 2x2 max pooling (stride 2); FC1 to the feature (2-d, so it can
be plotted). 28x28 -> 14 -> 7 -> 3 (floor), FC1 input 128 * 3 * 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from facecl.models import register_backbone


class LeNetPlusPlus(nn.Module):
    """LeNet++ (Table 1): [(5, w)_{/1,2} x 2 + PReLU, 2_{/2,0} max pool] for w in widths, FC1."""

    def __init__(
        self,
        feature_dim: int = 2,
        input_size: tuple[int, int] = (28, 28),
        in_channels: int = 1,
        widths: Sequence[int] = (32, 64, 128),
    ):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_channels = int(in_channels)
        layers: list[nn.Module] = []
        h, w = self.input_size
        prev = in_channels
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(prev, width, 5, 1, 2), nn.PReLU(width)]
                prev = width
            layers.append(nn.MaxPool2d(2, 2))
            h, w = h // 2, w // 2
        self.body = nn.Sequential(*layers)
        self.fc1 = nn.Linear(prev * h * w, self.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, feature_dim)
        return self.fc1(self.body(x).flatten(1))


@register_backbone("lenetpp")
def lenetpp(
    feature_dim: int = 2, input_size: tuple[int, int] = (28, 28), in_channels: int = 1
) -> nn.Module:
    """LeNet++ for MNIST (1-channel 28x28 input by default, 2-d feature)."""
    return LeNetPlusPlus(feature_dim=feature_dim, input_size=input_size, in_channels=in_channels)
