"""The model behind ``facecl embed``: a facecl checkpoint on torch, or an ONNX file on
onnxruntime (no torch model code involved). Both turn a uint8 RGB batch into fused features
with the same :mod:`facecl.embed.features` preprocessing and fusion.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecl.artifacts import sha256_file, sha256_json
from facecl.device import resolve_device
from facecl.embed.features import fused_dim, preprocess, uses_flip
from facecl.errors import CheckpointError, UsageError
from facecl.models.input_spec import InputSpec

ONNX_SUFFIXES = {".onnx"}


@dataclass(frozen=True)
class ModelFile:
    """The file a model is read from, resolved from a run directory or given directly."""

    path: Path
    kind: str  # "checkpoint" | "onnx"
    sha256: str

    def ref(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256, "kind": "file"}


def resolve_model(path: str | os.PathLike) -> ModelFile:
    """A train run directory (its ``model.pt``, else ``checkpoints/last.pt``), a ``.pt``
    checkpoint or an ``.onnx`` file (``facecl.train.run.resolve_checkpoint``)."""
    from facecl.train.run import resolve_checkpoint

    p = resolve_checkpoint(path).checkpoint
    kind = "onnx" if p.suffix.lower() in ONNX_SUFFIXES else "checkpoint"
    return ModelFile(p, kind, sha256_file(p))


@dataclass
class Backend:
    """Common face of both backends: ``embed(uint8 (B,H,W,3)) -> float32 (B, dim)``."""

    model: ModelFile
    arch: str
    feature_dim: int  # FC1 size of the backbone
    spec: InputSpec  # the crop geometry and normalisation the model was trained on
    fusion: str
    l2: bool
    name: str = ""
    device: str = "cpu"
    dtype: str = "float32"
    autocast: bool = False  # dtype is autocast's compute dtype (weights stay float32)
    train_config_sha256: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return fused_dim(self.feature_dim, self.fusion)

    @property
    def numeric(self) -> str:
        """The numeric mode the vectors are computed in: ``cpu:float32``,
        ``cuda:bfloat16+autocast``, ... (part of the embed fingerprint)."""
        return f"{self.device}:{self.dtype}" + ("+autocast" if self.autocast else "")

    @property
    def input_size(self) -> tuple[int, int]:
        """(H, W) of the model's input crops."""
        return self.spec.size

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "model_path": str(self.model.path),
            "model_sha256": self.model.sha256,
            "model_kind": self.model.kind,
            "arch": self.arch,
            "feature_dim": self.feature_dim,
            "input_size": list(self.input_size),
            "input_spec": self.spec.to_dict(),
            "dim": self.dim,
            "fusion": self.fusion,
            "l2": self.l2,
            "normalisation": self.spec.normalisation,
            "device": self.device,
            "dtype": self.dtype,
            "autocast": self.autocast,
            "numeric": self.numeric,
            "train_config_sha256": self.train_config_sha256,
            **self.info,
        }

    def embed(self, images: np.ndarray) -> np.ndarray:  # (B,H,W,3) uint8 -> (B,dim) float32
        raise NotImplementedError


def resolve_precision(precision: str, fp16: bool, device: str) -> str:
    """The torch backbone's compute dtype on ``device``: ``precision`` unless it is auto.

    auto (with ``fp16``, the default) is reduced precision where the hardware has it: on
    CUDA bfloat16 where the GPU supports it (the range of float32: deep nets do not
    overflow), else float16; on the CPU bfloat16 where it is native (AMX or AVX512-BF16,
    ``facecl.device.cpu_native_bf16``: 4-5x float32 on sphere20, vectors at cosine >= 0.9999
    to float32, docs/benchmarks.md), else float32. Without ``fp16``: float32.
    """
    if precision != "auto":
        return precision
    if not fp16:
        return "float32"
    if device != "cuda":
        from facecl.device import cpu_native_bf16

        return "bfloat16" if cpu_native_bf16() else "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _cpu_bf16(device: str) -> dict[str, bool]:
    """What ``precision`` auto went by on the CPU, for the manifest."""
    from facecl.device import cpu_native_bf16

    return {"cpu_native_bf16": cpu_native_bf16()} if device == "cpu" else {}


class TorchBackend(Backend):
    def __init__(
        self,
        model: ModelFile,
        fusion: str,
        l2: bool,
        device: str = "auto",
        fp16: bool = True,
        precision: str = "auto",
        memory_format: str = "channels_last",
    ):
        import torch

        from facecl.train.checkpoint import build_backbone, checkpoint_input_spec, load_checkpoint

        ckpt = load_checkpoint(model.path)
        missing = [k for k in ("arch", "model", "feature_dim", "input_size") if k not in ckpt]
        if missing:
            raise CheckpointError(
                f"{model.path} lacks {', '.join(missing)}", "pass a checkpoint from facecl train"
            )
        net = build_backbone(ckpt)
        spec = checkpoint_input_spec(ckpt)
        net_size = tuple(int(v) for v in getattr(net, "input_size", spec.size))
        if net_size != spec.size:
            raise CheckpointError(
                f"{model.path} records {spec.size_text} inputs, its backbone takes "
                f"{net_size[0]}x{net_size[1]}",
                "the checkpoint is corrupt or was edited",
            )
        dev = resolve_device(device)
        dtype = resolve_precision(precision, fp16, dev)
        super().__init__(
            model=model,
            arch=str(ckpt["arch"]),
            feature_dim=int(getattr(net, "feature_dim", ckpt["feature_dim"])),
            spec=spec,
            fusion=fusion,
            l2=l2,
            name="torch",
            device=dev,
            dtype=dtype,
            autocast=dtype != "float32",
            train_config_sha256=sha256_json(ckpt.get("config", {})),
            info={"memory_format": memory_format, "precision_asked": precision, **_cpu_bf16(dev)},
        )
        # float32 weights; reduced precision through autocast only
        self._layout = (
            torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        )
        self.net = net.to(dev).to(memory_format=self._layout)
        self._amp = getattr(torch, dtype) if self.autocast else None
        self._torch = torch

    def embed(self, images: np.ndarray) -> np.ndarray:  # (B,H,W,3) uint8 -> (B,dim) float32
        from facecl.embed.features import flip_features, l2_normalize

        torch = self._torch
        x = torch.from_numpy(preprocess(images, self.spec)).to(self.device)  # (B,3,H,W)
        x = x.contiguous(memory_format=self._layout)
        amp = (
            torch.autocast(torch.device(self.device).type, dtype=self._amp)
            if self._amp is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode():
            with amp:
                out = flip_features(self.net, x, self.fusion).float()  # (B,dim)
            if self.l2:
                out = l2_normalize(out)
        return out.cpu().numpy()


class OnnxBackend(Backend):
    """An exported model on onnxruntime. The file's metadata gives input size and whether
    flip fusion is baked in; otherwise the flip pass runs here, fused as in torch."""

    def __init__(self, model: ModelFile, fusion: str, l2: bool, device: str = "auto"):
        self.session = open_onnx_session(model.path, device)
        meta = self.session.get_modelmeta().custom_metadata_map
        self.input_name = self.session.get_inputs()[0].name
        spec = onnx_input_spec(self.session, model.path)
        try:
            baked = meta.get("fusion", "none")
            raw_dim = int(meta["output_dim"])
        except (KeyError, ValueError):
            baked, raw_dim = "none", int(self.session.get_outputs()[0].shape[1])
        if baked != "none" and fusion != baked:
            raise UsageError(
                f"{model.path} has '{baked}' flip fusion built in, but --fusion {fusion} was asked",
                f"use --fusion {baked}, or export without --with-flip",
            )
        self.baked = baked
        feature_dim = raw_dim if baked == "none" else int(meta.get("feature_dim", raw_dim))
        used = self.session.get_providers()  # what onnxruntime actually runs on
        super().__init__(
            model=model,
            arch=meta.get("arch", "unknown"),
            feature_dim=feature_dim,
            spec=spec,
            fusion=fusion,
            l2=l2,
            name="onnxruntime",
            device="cuda" if used[0] == CUDA_PROVIDER else "cpu",
            train_config_sha256=meta.get("train_config_sha256", ""),
            info={
                "onnx_fusion_in_graph": baked,
                "onnx_opset": meta.get("opset", ""),
                "onnx_providers": list(used),
            },
        )

    def _run(self, x: np.ndarray) -> np.ndarray:  # (B,3,H,W) float32 -> (B,D)
        return self.session.run(None, {self.input_name: x})[0]

    def embed(self, images: np.ndarray) -> np.ndarray:  # (B,H,W,3) uint8 -> (B,dim) float32
        import torch

        from facecl.embed.features import fuse, l2_normalize

        x = preprocess(images, self.spec)  # (B,3,H,W)
        if self.baked != "none":
            out = torch.from_numpy(self._run(x))
        elif uses_flip(self.fusion):
            both = self._run(np.concatenate([x, np.ascontiguousarray(x[..., ::-1])]))  # (2B,D)
            a, b = torch.from_numpy(both[: len(x)]), torch.from_numpy(both[len(x) :])
            out = fuse(a, b, self.fusion)
        else:
            out = torch.from_numpy(self._run(x))
        if self.l2:
            out = l2_normalize(out)
        return out.numpy().astype(np.float32, copy=False)


CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
_ORT_ERRORS_ONLY = 3  # onnxruntime log severity: 0 verbose .. 3 error, 4 fatal


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send whatever native code writes to file descriptor 1 to stderr meanwhile: stdout
    carries ``--json`` and nothing else (onnxruntime logs its provider fallback there)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable fd 1 (embedded interpreters)
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def open_onnx_session(path: Path, device: str) -> Any:
    """An onnxruntime session for ``device`` (auto, cpu, cuda). With ``cuda`` the CUDA
    provider must be the one in use: onnxruntime falls back to CPU when it cannot load it,
    and that is an error here, not a silent CPU run. Its log goes to stderr, errors only."""
    import onnxruntime as ort

    providers = [CPU_PROVIDER]
    if device in ("auto", "cuda") and CUDA_PROVIDER in ort.get_available_providers():
        providers.insert(0, CUDA_PROVIDER)
    elif device == "cuda":
        raise UsageError(
            "--device cuda, but this onnxruntime has no CUDA provider",
            "install onnxruntime-gpu in place of onnxruntime (docs/deploy.md), or use --device cpu",
        )
    options = ort.SessionOptions()
    options.log_severity_level = _ORT_ERRORS_ONLY
    try:
        with _stdout_to_stderr():
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a loadable ONNX model ({first})",
            "re-create it with 'facecl export'",
        ) from None
    used = list(session.get_providers())
    if device == "cuda" and CUDA_PROVIDER not in used:
        raise UsageError(
            f"--device cuda, but onnxruntime could not load its CUDA provider (running on "
            f"{', '.join(used) or 'nothing'})",
            "check the CUDA and cuDNN libraries onnxruntime-gpu needs, or use --device cpu",
        )
    return session


def onnx_input_spec(session: Any, path: Path) -> InputSpec:
    """The InputSpec of an ONNX model: its ``input_spec`` metadata (``facecl export``); for
    older exports ``input_size``/``mean``/``scale``, or the graph's fixed input shape."""
    import json

    from facecl.train.checkpoint import checkpoint_input_spec

    meta = session.get_modelmeta().custom_metadata_map
    try:
        if "input_spec" in meta:
            return InputSpec.from_dict(json.loads(meta["input_spec"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path} has unreadable input_spec metadata ({e})", "re-create it with 'facecl export'"
        ) from None
    shape = session.get_inputs()[0].shape  # (N, C, H, W)
    channels = shape[1] if isinstance(shape[1], int) else 3
    try:
        h, w = (int(v) for v in meta["input_size"].split("x"))
    except (KeyError, ValueError):
        if not isinstance(shape[2], int) or not isinstance(shape[3], int):
            raise CheckpointError(
                f"{path} has no facecl metadata and no fixed input size",
                "export it with 'facecl export'",
            ) from None
        h, w = int(shape[2]), int(shape[3])
    # The geometry of an input size, as for a checkpoint written before specs were recorded.
    spec = checkpoint_input_spec({"input_size": [h, w], "arch_kwargs": {"in_channels": channels}})
    if "mean" in meta and "scale" in meta:
        spec = dataclasses.replace(spec, mean=float(meta["mean"]), scale=float(meta["scale"]))
    return spec


def load_backend(
    model: ModelFile,
    fusion: str,
    l2: bool,
    device: str = "auto",
    fp16: bool = True,
    precision: str = "auto",
    memory_format: str = "channels_last",
) -> Backend:
    """The backend for ``model``; an ONNX model runs its float32 graph (``fp16``,
    ``precision`` and ``memory_format`` are for torch)."""
    if model.kind == "onnx":
        return OnnxBackend(model, fusion, l2, device)
    return TorchBackend(model, fusion, l2, device, fp16, precision, memory_format)
