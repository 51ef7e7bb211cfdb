"""Shared fixtures for the align tests: decoded lfw_mini images and one detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def mini_paths(lfw_mini: Path) -> list[Path]:
    return sorted((lfw_mini / "lfw_original_150px").rglob("*.jpg"))


@pytest.fixture(scope="session")
def mini_images(mini_paths) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")) for p in mini_paths]


@pytest.fixture(scope="session")
def detector():
    import torch

    from facecl.align.mtcnn import MTCNN

    torch.set_num_threads(2)
    return MTCNN()


@pytest.fixture(scope="session")
def mini_detections(detector, mini_images):
    out = []
    for s in range(0, len(mini_images), 64):
        out += detector.detect(mini_images[s : s + 64])
    return out
