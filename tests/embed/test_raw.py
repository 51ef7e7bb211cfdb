"""Raw photos go through the align stage's code: same vectors as embedding its artifact."""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.cli import app

runner = CliRunner()


def read_h5(path):
    with h5py.File(path / "embeddings.h5", "r") as f:
        return {k: f[k][()] for k in f}


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw_mini):
    """Six LFW photos of three people, and one photo without a face."""
    import cv2

    root = tmp_path_factory.mktemp("photos") / "lfw"
    src = lfw_mini / "lfw_original_150px"
    people = [d for d in sorted(src.iterdir()) if len(list(d.glob("*.jpg"))) >= 2][:3]
    for d in people:
        (root / d.name).mkdir(parents=True)
        for f in sorted(d.glob("*.jpg"))[:2]:
            shutil.copy(f, root / d.name / f.name)
    (root / "Nobody").mkdir()
    g = np.random.default_rng(0)
    cv2.imwrite(str(root / "Nobody" / "Nobody_0001.jpg"), g.integers(0, 40, (150, 150, 3)))
    return root


def test_raw_photos_and_align_artifact_give_same_vectors(tmp_path, tiny_ckpt, photos):
    from facecl.align import stage
    from facecl.align.config import AlignConfig

    stage.run_align(AlignConfig(), photos, tmp_path / "aligned")
    a, b = tmp_path / "from_artifact", tmp_path / "from_photos"
    r = runner.invoke(app, ["embed", str(tiny_ckpt), str(tmp_path / "aligned"), "-o", str(a)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["embed", str(tiny_ckpt), str(photos), "-o", str(b), "--json"])
    assert r.exit_code == 0, r.output
    da, db = read_h5(a), read_h5(b)
    assert da["keys"].tolist() == db["keys"].tolist() and len(da["keys"]) == 7
    assert da["status"].tolist() == db["status"].tolist()
    real = [[os.path.realpath(x.decode()) for x in d["paths"]] for d in (da, db)]
    assert real[0] == real[1] and os.path.isfile(real[0][0])  # the photos themselves
    status = [s.decode() for s in db["status"]]
    assert status.count("ok") == 6 and status[-1] != "ok"  # Nobody: no face
    ok = np.array([s == "ok" for s in status])
    np.testing.assert_array_equal(da["embeddings"][ok], db["embeddings"][ok])
    assert np.isnan(db["embeddings"][~ok]).all()
