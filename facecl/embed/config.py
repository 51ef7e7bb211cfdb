"""Configs of ``facecl embed`` and ``facecl export``: the only home of their defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from facecl.device import Device, check_device

Fusion = Literal["concat", "sum", "mean", "none"]
"""The names of ``facecl.embed.features.FUSIONS`` (a test keeps them equal; the registry
imports torch, which ``--help`` should not)."""

Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

MemoryFormat = Literal["channels_last", "contiguous"]
MEMORY_FORMATS: tuple[str, ...] = get_args(MemoryFormat)


@dataclass(frozen=True)
class EmbedConfig:
    """How ``facecl embed`` turns aligned faces into vectors."""

    fusion: Fusion = "concat"
    """How FC1(image) and FC1(flip(image)) combine: concat (papers), sum, mean, none (no flip)."""

    l2: bool = False
    """L2-normalise each fused vector (recorded in the manifest; cosine scoring needs none)."""

    batch_size: int = 64
    """Images per forward pass (the flip doubles the backbone batch)."""

    device: Device = field(default="auto", metadata={"runtime": True})
    """auto (cuda when available), cpu or cuda. With an ONNX model: the onnxruntime provider
    (cuda needs onnxruntime-gpu, and fails unless its CUDA provider actually loads). Not
    fingerprinted itself: the resolved numeric mode (device and dtype) is."""

    fp16: bool = True
    """Reduced precision where the hardware has it when ``precision`` is auto: autocast in
    bfloat16 on a GPU that supports it (else float16) and on a CPU with native bfloat16 (AMX
    or AVX512-BF16; float32 on other CPUs); outputs are stored as float32. --no-fp16: float32."""

    precision: Precision = "auto"
    """The torch backbone's numeric mode: auto (see ``fp16``), float32 (exact, on any
    device), or bfloat16 / float16 autocast. The resolved mode (device and dtype) is
    recorded in the manifest and is part of the fingerprint: a run never mixes modes."""

    memory_format: MemoryFormat = "channels_last"
    """The torch backbone's tensor layout: channels_last (NHWC: oneDNN's and cuDNN's fast
    convolution path, ~1.5x eager NCHW on a 2-core AVX-512 CPU, docs/benchmarks.md) or
    contiguous (NCHW, torch's default). Same float32 maths, vectors equal to ~1e-7; recorded
    in the manifest and fingerprinted. No effect on an ONNX model."""

    assume_aligned: bool = field(default=False, metadata={"cli_name": "--aligned"})
    """INPUT photos (a plain folder or list) are already aligned crops: no detection or
    alignment."""

    chunk_batches: int = 8
    """Batches per chunk written to ``<out>.partial/chunks/``: a killed run resumes per chunk."""

    verify_inputs: bool = field(default=False, metadata={"runtime": True})
    """Hash the bytes of every file of a folder INPUT (sha256, streamed: reads the whole
    tree) to decide whether OUT is up to date, instead of trusting the hash cache while a
    file's size and mtime are unchanged (an edit that keeps both is missed without it);
    recorded in the manifest, never fingerprinted."""

    def __post_init__(self) -> None:
        from facecl.embed.features import FUSIONS
        from facecl.errors import ConfigError

        FUSIONS.get(self.fusion)
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}", "use e.g. 64")
        check_device(self.device)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}", f"choose {', '.join(PRECISIONS)}"
            )
        if self.memory_format not in MEMORY_FORMATS:
            raise ConfigError(
                f"unknown memory format {self.memory_format!r}",
                f"choose {', '.join(MEMORY_FORMATS)}",
            )
        if self.chunk_batches < 1:
            raise ConfigError(f"chunk_batches must be >= 1, got {self.chunk_batches}", "use 8")

    @property
    def chunk_size(self) -> int:
        """Images per resumable chunk (a whole number of batches)."""
        return self.batch_size * self.chunk_batches


@dataclass(frozen=True)
class ExportConfig:
    """How ``facecl export`` writes and checks the ONNX model."""

    with_flip: bool = False
    """Bake the flip and ``fusion`` into the graph (output D' instead of the FC1 dim D)."""

    fusion: Fusion = "concat"
    """Fusion baked in with ``with_flip`` (ignored without it)."""

    opset: int = 17
    """ONNX opset version (recorded in the model and the sidecar)."""

    min_parity: float = 0.9999
    """Fail unless every verification face has cosine(torch, onnxruntime) >= this."""

    verify_max_images: int = 64
    """At most this many faces from the verification input are compared."""

    insightface: bool = False
    """Write what insightface.model_zoo.get_model loads (ArcFaceONNX): input 'data'
    (N, 3, 112, 112) RGB 0..255 ArcFace crops, normalisation inside the graph (a 112x96
    model gets columns 8..104), one output 'fc1'. Not with --with-flip."""

    def __post_init__(self) -> None:
        from facecl.embed.features import FUSIONS
        from facecl.errors import ConfigError

        FUSIONS.get(self.fusion)
        if self.insightface and self.with_flip:
            raise ConfigError(
                "--insightface exports FC1 only (insightface fuses the flip itself)",
                "drop --with-flip",
            )
        if not 11 <= self.opset <= 21:
            raise ConfigError(f"unsupported opset {self.opset}", "choose an opset in 11..21")
        if not 0.0 < self.min_parity <= 1.0:
            raise ConfigError(f"min_parity must be in (0, 1], got {self.min_parity}", "use 0.9999")

    @property
    def baked_fusion(self) -> str:
        """The fusion inside the exported graph: ``none`` unless ``with_flip``."""
        return self.fusion if self.with_flip else "none"
