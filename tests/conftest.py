"""Shared fixtures: the bundled LFW sample, and the full sets in ../shared when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
LFW_MINI = DATA / "lfw_mini"
SHARED = Path(os.environ.get("FACECL_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"


@pytest.fixture(scope="session")
def lfw_mini() -> Path:
    """The committed sample: lfw_original_150px/<id>/<img>.jpg, pairs.txt, people_train.txt."""
    assert (LFW_MINI / "lfw_original_150px").is_dir(), "tests/data/lfw_mini is missing"
    return LFW_MINI


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (full LFW, BLUFR, MNIST); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "lfw").is_dir():
        pytest.skip(f"full datasets not available at {SHARED_DATA} (set FACECL_SHARED)")
    return SHARED_DATA
