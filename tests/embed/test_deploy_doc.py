"""The plain-Python example of docs/deploy.md runs and matches `facecl embed`."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.embed.artifact import EMBEDDINGS

ROOT = Path(__file__).resolve().parents[2]

runner = CliRunner()


def snippet() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    code = [b for b in blocks if "def embed(paths)" in b]
    assert len(code) == 1, "docs/deploy.md lost its plain-Python example"
    return code[0]


@pytest.mark.parametrize("with_flip", [False, True])
def test_deploy_snippet_matches_facecl_embed(tmp_path, tiny_ckpt, crops, with_flip):
    model = tmp_path / "model.onnx"
    args = ["export", str(tiny_ckpt), "-o", str(model)] + (["--with-flip"] if with_flip else [])
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(
        app, ["embed", str(tiny_ckpt), str(crops), "--aligned", "-o", str(tmp_path / "e")]
    )
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "e" / EMBEDDINGS, "r") as f:
        want, paths = f["embeddings"][()], list(f["paths"].asstr()[()])
    ns = {"MODEL": str(model), "IMAGES": paths}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(snippet(), "docs/deploy.md", "exec"), ns)  # noqa: S102 - our own docs
    got = ns["vectors"]
    assert got.shape == want.shape == (len(paths), 32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
