"""Train-stage fixtures: one thread per process (the test machine is small and shared),
and a small synthetic pack."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .helpers import make_pack


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    """4 classes x 6 images of 24x20 in 3 shards."""
    return make_pack(tmp_path_factory.mktemp("pack"))
