"""Shared fixtures: the bundled LFW sample, and the full sets in ../shared when present."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
LFW_MINI = DATA / "lfw_mini"
SHARED = Path(os.environ.get("FACECL_SHARED", ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"

# embed's precision auto is bfloat16 on a CPU with native bf16 (issue 16): pin the tests (and
# the CLI subprocesses they start) to float32 so that they compare the same maths on every
# machine; tests of the bf16 choice set it themselves.
os.environ["FACECL_CPU_BF16"] = "0"
# The content-hash cache of the tests and their subprocesses: a fresh one per session, never
# the user's ~/.cache/facecl.
os.environ["FACECL_CACHE_DIR"] = tempfile.mkdtemp(prefix="facecl-hash-cache-")


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
