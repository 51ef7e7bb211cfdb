"""LeNet++ of ECCV/IJCV Table 1, the MNIST toy network with a 2-d feature.

Three stages of two 5x5 convolutions (stride 1, padding 2, PReLU each) with 32, 64, 128
filters, each stage followed by 2x2 max pooling (stride 2); FC1 to the feature (2-d, so it can
be plotted). 28x28 -> 14 -> 7 -> 3 (floor), FC1 input 128 * 3 * 3.

``lenetpp-wu`` is the net of Wu's caffe-face ``mnist_example/mnist_train_test.prototxt``
(Wu 2018 Sec. 4.2): the same convolutions, a 3x3 stride-2 pool3 (7 -> 3) and a PReLU on the
2-d feature (``preluip1``); its classifier has no bias (``--no-head-bias``).
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
        last_pool: int = 2,
        feature_prelu: bool = False,
    ):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.in_channels = int(in_channels)
        layers: list[nn.Module] = []
        h, w = self.input_size
        prev = in_channels
        for stage, width in enumerate(widths):
            for _ in range(2):
                layers += [nn.Conv2d(prev, width, 5, 1, 2), nn.PReLU(width)]
                prev = width
            k = last_pool if stage == len(widths) - 1 else 2
            layers.append(nn.MaxPool2d(k, 2))
            h, w = (h - k) // 2 + 1, (w - k) // 2 + 1
        self.body = nn.Sequential(*layers)
        self.fc1 = nn.Linear(prev * h * w, self.feature_dim)
        self.feature_act: nn.Module = nn.PReLU(1) if feature_prelu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) -> (B, feature_dim)
        return self.feature_act(self.fc1(self.body(x).flatten(1)))


@register_backbone("lenetpp")
def lenetpp(
    feature_dim: int = 2, input_size: tuple[int, int] = (28, 28), in_channels: int = 1
) -> nn.Module:
    """LeNet++ for MNIST (1-channel 28x28 input by default, 2-d feature)."""
    return LeNetPlusPlus(feature_dim=feature_dim, input_size=input_size, in_channels=in_channels)


@register_backbone("lenetpp-wu")
def lenetpp_wu(
    feature_dim: int = 2, input_size: tuple[int, int] = (28, 28), in_channels: int = 1
) -> nn.Module:
    """Wu 2018's caffe-face LeNet++: pool3 3x3 stride 2, PReLU on the 2-d feature."""
    return LeNetPlusPlus(
        feature_dim=feature_dim,
        input_size=input_size,
        in_channels=in_channels,
        last_pool=3,
        feature_prelu=True,
    )
