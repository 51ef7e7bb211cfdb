"""The numeric mode (device and dtype) is part of an embeddings artifact (issue #18): CPU
float32 and reduced-precision vectors are different artifacts, and a resume never mixes them.
On CPU, bfloat16 autocast stands in for the GPU's reduced precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import facecl.embed.stage as stage
from facecl.artifacts import read_manifest, sha256_file
from facecl.embed.artifact import EMBEDDINGS
from facecl.embed.config import EmbedConfig
from facecl.errors import ArtifactError, ConfigError

from .test_embed import read_h5


def _cfg(precision: str) -> EmbedConfig:
    # 15 faces in chunks of 4: a partial run can stop after its first chunk
    return EmbedConfig(
        device="cpu", precision=precision, assume_aligned=True, batch_size=2, chunk_batches=2
    )


def _embed(ckpt, crops, out, precision, **kw):
    return stage.run_embed(ckpt, crops, out, _cfg(precision), show_progress=False, **kw)


def test_numeric_mode_is_recorded_and_fingerprinted(tmp_path, tiny_ckpt, crops):
    out = tmp_path / "emb"
    fp32 = _embed(tiny_ckpt, crops, out, "float32")
    m32 = read_manifest(out)
    assert m32.config["numeric"] == m32.extra["numeric"] == "cpu:float32"
    assert (m32.extra["dtype"], m32.extra["autocast"]) == ("float32", False)
    assert fp32.summary()["numeric"] == "cpu:float32"
    v32 = read_h5(out)["embeddings"]

    with pytest.raises(ArtifactError, match="different config"):  # not "up to date"
        _embed(tiny_ckpt, crops, out, "bfloat16")
    _embed(tiny_ckpt, crops, out, "bfloat16", force=True)
    m16 = read_manifest(out)
    assert m16.config["numeric"] == m16.extra["numeric"] == "cpu:bfloat16+autocast"
    assert m16.fingerprint != m32.fingerprint
    v16 = read_h5(out)["embeddings"]
    assert not np.array_equal(v16, v32)  # really computed in another precision ...
    cos = (v16 * v32).sum(1) / (np.linalg.norm(v16, axis=1) * np.linalg.norm(v32, axis=1))
    assert cos.min() > 0.99  # ... of the same model
    assert _embed(tiny_ckpt, crops, out, "bfloat16").up_to_date


def _stop_after_first_chunk(monkeypatch, ckpt, crops, out, precision) -> None:
    save = stage._save_chunk
    calls = []

    def save_then_die(path, vectors, status):
        if calls:
            raise KeyboardInterrupt  # killed while computing the second chunk
        calls.append(path)
        save(path, vectors, status)

    monkeypatch.setattr(stage, "_save_chunk", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _embed(ckpt, crops, out, precision)
    monkeypatch.setattr(stage, "_save_chunk", save)
    assert len(list((out.parent / f"{out.name}.partial" / "chunks").glob("*.npz"))) == 1


def test_resume_refuses_to_mix_numeric_modes(tmp_path, tiny_ckpt, crops, monkeypatch):
    ref = tmp_path / "ref"
    _embed(tiny_ckpt, crops, ref, "bfloat16")
    # same mode: the float32 partial is resumed after its first chunk (the control)
    same = tmp_path / "same"
    _stop_after_first_chunk(monkeypatch, tiny_ckpt, crops, same, "float32")
    assert _embed(tiny_ckpt, crops, same, "float32").resumed_from == 4
    # another mode: the float32 chunk is dropped and every vector is computed in bfloat16
    other = tmp_path / "other"
    _stop_after_first_chunk(monkeypatch, tiny_ckpt, crops, other, "float32")
    assert _embed(tiny_ckpt, crops, other, "bfloat16").resumed_from == 0
    assert sha256_file(other / EMBEDDINGS) == sha256_file(ref / EMBEDDINGS)


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bfloat16_on_a_cpu_with_native_bf16_else_float32(tiny_ckpt, monkeypatch, native):
    """auto on the CPU follows the hardware check (issue 16); the choice and what it went by
    are in the backend's manifest fields; --no-fp16 and --precision float32 stay float32."""
    import facecl.device
    from facecl.embed.backends import load_backend, resolve_model

    monkeypatch.setattr(facecl.device, "cpu_native_bf16", lambda: native)
    model = resolve_model(tiny_ckpt)
    auto = load_backend(model, "concat", False, "cpu", True, "auto")
    assert auto.numeric == ("cpu:bfloat16+autocast" if native else "cpu:float32")
    assert auto.describe()["cpu_native_bf16"] is native
    assert auto.describe()["precision_asked"] == "auto"
    for fp16, precision in ((False, "auto"), (True, "float32")):
        assert load_backend(model, "concat", False, "cpu", fp16, precision).numeric == "cpu:float32"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        EmbedConfig(precision="fp8")


def test_cpu_bf16_check_reads_torchs_cpu_capabilities(monkeypatch):
    from facecl.device import CPU_BF16_ENV, cpu_native_bf16

    want = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    try:
        for env, expect in (("", bool(want)), ("1", True), ("0", False)):
            monkeypatch.setenv(CPU_BF16_ENV, env)
            cpu_native_bf16.cache_clear()
            assert cpu_native_bf16() is expect
    finally:
        cpu_native_bf16.cache_clear()


def test_float32_is_exact(tiny_ckpt, crops, tmp_path):
    """--precision float32 gives the vectors of the float32 net itself, bit for bit."""
    from facecl.embed.features import flip_features, preprocess
    from facecl.train.checkpoint import build_backbone, checkpoint_input_spec, load_checkpoint

    _embed(tiny_ckpt, crops, tmp_path / "e", "float32")
    got = read_h5(tmp_path / "e")
    ckpt = load_checkpoint(tiny_ckpt)
    net, spec = build_backbone(ckpt).eval(), checkpoint_input_spec(ckpt)
    net = net.to(memory_format=torch.channels_last)
    from PIL import Image

    paths = [p.decode() if isinstance(p, bytes) else str(p) for p in got["paths"]]
    imgs = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    want = []
    for s in range(0, len(imgs), 2):  # the stage's batch size: the same float32 sums
        x = torch.from_numpy(preprocess(imgs[s : s + 2], spec))
        with torch.inference_mode():
            x = x.contiguous(memory_format=torch.channels_last)
            want.append(flip_features(net, x, "concat").float().numpy())
    np.testing.assert_array_equal(got["embeddings"], np.concatenate(want))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_uses_bf16_autocast_where_supported(tmp_path, tiny_ckpt, crops):
    cfg = EmbedConfig(device="cuda", assume_aligned=True)
    stage.run_embed(tiny_ckpt, crops, tmp_path / "gpu", cfg, show_progress=False)
    want = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    extra = read_manifest(tmp_path / "gpu").extra
    assert extra["numeric"] == f"cuda:{want}+autocast"
