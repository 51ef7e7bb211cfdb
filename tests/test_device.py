"""The one device type and resolver shared by align, embed (and train)."""

from __future__ import annotations

import pytest
import torch

from facecl.align.config import AlignRuntime
from facecl.device import DEVICES, resolve_device
from facecl.embed.config import EmbedConfig
from facecl.errors import ConfigError, UsageError


def test_names_and_resolution():
    assert DEVICES == ("auto", "cpu", "cuda")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu'.*auto, cpu, cuda"):
        resolve_device("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_usage_error_with_the_fix():
    with pytest.raises(UsageError, match="CUDA is not available") as e:
        resolve_device("cuda")
    assert "--device cpu" in (e.value.hint or "")
    with pytest.raises(UsageError):
        AlignRuntime(device="cuda").torch_device()


def test_stage_configs_check_the_name():
    with pytest.raises(ConfigError, match="unknown device"):
        AlignRuntime(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown device"):
        EmbedConfig(device="tpu")  # type: ignore[arg-type]
