from __future__ import annotations

import pytest

from .helpers import make_align_artifact


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """All 176 lfw_mini images as an align artifact (112x96 crops), plus 3 rows without a crop."""
    return make_align_artifact(tmp_path_factory.mktemp("align"), no_face=3)
