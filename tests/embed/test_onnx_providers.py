"""onnxruntime on CUDA (issue #18): the provider in use is checked after the session is made.

onnxruntime falls back to CPU when the CUDA provider is listed but cannot load, and logs
that on stdout. Here a real CPU session stands in for such a fallback (CUDA listed as
available, CPU the only provider in use), and writes to file descriptor 1 as the native
logger does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from facecl.artifacts import read_manifest
from facecl.cli import app

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
FALLBACK_LOG = b"[W:onnxruntime] CUDA provider failed to load, falling back to CPU\n"

runner = CliRunner()


@pytest.fixture(scope="module")
def onnx_model(tiny_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    r = runner.invoke(app, ["export", str(tiny_ckpt), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def cuda_falls_back(monkeypatch) -> list[list[str]]:
    """CUDA listed as available; every session asked for it ends up on the CPU only."""
    asked: list[list[str]] = []
    real = ort.InferenceSession

    class FallbackSession(real):  # type: ignore[misc, valid-type]
        def __init__(self, path, sess_options=None, providers=None, **kw):
            asked.append(list(providers or []))
            os.write(1, FALLBACK_LOG)  # native code logging to fd 1
            super().__init__(path, sess_options=sess_options, providers=[CPU], **kw)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", FallbackSession)
    return asked


def test_cuda_asked_but_not_obtained_is_a_one_line_error(
    onnx_model, crops, tmp_path, cuda_falls_back, capfd
):
    out = tmp_path / "emb"
    args = ["embed", "--onnx", str(onnx_model), str(crops), "--aligned", "-o", str(out)]
    r = runner.invoke(app, [*args, "--device", "cuda", "--json"])
    assert r.exit_code == 2, r.output
    assert "could not load its CUDA provider" in r.output and "Traceback" not in r.output
    assert cuda_falls_back == [[CUDA, CPU]]  # it was asked for, first
    assert not out.exists() and not Path(f"{out}.partial").exists()
    assert FALLBACK_LOG.decode().strip() not in capfd.readouterr().out


def test_fallback_under_auto_keeps_stdout_json_and_records_the_cpu(
    onnx_model, crops, tmp_path, cuda_falls_back, capfd
):
    out = tmp_path / "emb"
    args = ["embed", "--onnx", str(onnx_model), str(crops), "--aligned", "-o", str(out)]
    r = runner.invoke(app, [*args, "--device", "auto", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] > 0  # stdout is the JSON alone
    fds = capfd.readouterr()
    assert FALLBACK_LOG.decode().strip() not in fds.out  # the native log went to stderr
    assert FALLBACK_LOG.decode().strip() in fds.err
    extra = read_manifest(out).extra
    assert extra["device"] == "cpu" and extra["onnx_providers"] == [CPU]


def test_no_cuda_provider_at_all_is_a_one_line_error(onnx_model, crops, tmp_path):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    args = ["embed", "--onnx", str(onnx_model), str(crops), "--aligned", "-o", str(tmp_path)]
    r = runner.invoke(app, [*args, "--device", "cuda"])
    assert r.exit_code == 2 and "no CUDA provider" in r.output and "onnxruntime-gpu" in r.output


@pytest.mark.gpu
@pytest.mark.skipif(CUDA not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_onnxruntime_gpu_runs_on_cuda(onnx_model, crops, tmp_path):
    out = tmp_path / "emb"
    args = ["embed", "--onnx", str(onnx_model), str(crops), "--aligned", "-o", str(out)]
    r = runner.invoke(app, [*args, "--device", "cuda", "--json"])
    assert r.exit_code == 0, r.output
    extra = read_manifest(out).extra
    assert extra["device"] == "cuda" and extra["onnx_providers"][0] == CUDA
