"""The torch backbone's tensor layout (issue 16): channels_last by default, the same float32
maths as NCHW (vectors equal to rounding), recorded in the manifest and fingerprinted."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facecl.embed.stage as stage
from facecl.artifacts import read_manifest
from facecl.embed.backends import TorchBackend, load_backend, resolve_model
from facecl.embed.config import EmbedConfig
from facecl.errors import ArtifactError, ConfigError

from .test_embed import read_h5


def _embed(ckpt, crops, out, memory_format, **kw):
    cfg = EmbedConfig(device="cpu", assume_aligned=True, memory_format=memory_format)
    return stage.run_embed(ckpt, crops, out, cfg, show_progress=False, **kw)


def test_default_layout_is_channels_last_and_runs_that_way(tiny_ckpt):
    assert EmbedConfig().memory_format == "channels_last"
    backend = load_backend(resolve_model(tiny_ckpt), "concat", False, "cpu")
    assert isinstance(backend, TorchBackend)
    convs = [m for m in backend.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert backend.describe()["memory_format"] == "channels_last"


def test_layouts_agree_are_recorded_and_fingerprinted(tmp_path, tiny_ckpt, crops):
    out = tmp_path / "emb"
    _embed(tiny_ckpt, crops, out, "contiguous")
    nchw, m_nchw = read_h5(out)["embeddings"], read_manifest(out)
    assert m_nchw.config["memory_format"] == m_nchw.extra["memory_format"] == "contiguous"
    with pytest.raises(ArtifactError, match="different config"):  # not "up to date"
        _embed(tiny_ckpt, crops, out, "channels_last")
    _embed(tiny_ckpt, crops, out, "channels_last", force=True)
    nhwc, m_nhwc = read_h5(out)["embeddings"], read_manifest(out)
    assert m_nhwc.extra["memory_format"] == "channels_last"
    assert m_nhwc.fingerprint != m_nchw.fingerprint
    cos = (nchw * nhwc).sum(1) / (np.linalg.norm(nchw, axis=1) * np.linalg.norm(nhwc, axis=1))
    assert cos.min() >= 0.99999  # the same vectors, to float32 rounding


def test_unknown_memory_format_is_refused():
    with pytest.raises(ConfigError, match="unknown memory format 'nhwc'"):
        EmbedConfig(memory_format="nhwc")  # type: ignore[arg-type]
