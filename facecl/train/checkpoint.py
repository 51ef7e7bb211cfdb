"""Self-describing checkpoints, loaded with ``torch.load(..., weights_only=True)``.

A checkpoint is a dict of tensors and plain data only (no pickled objects)::

    {
      "format": "facecl.checkpoint",
      "version": 2,                 # bump (and note why below) when the layout changes
      "facecl_version": "0.1.0",
      "arch": "sphere20",           # backbone registry name
      "arch_kwargs": {...},         # kwargs for create_backbone(arch, **arch_kwargs)
      "feature_dim": 512,
      "input_size": [112, 96],
      "input_spec": {...},          # InputSpec.to_dict(): crop size, align template and its
                                    # landmarks, colour, channels, mean, scale
      "loss": "cl",                 # center-loss registry name ("none" for softmax only)
      "head": "softmax",
      "num_classes": 10575,
      "config": {...},              # the resolved TrainConfig as a plain (nested) dict
      "model": state_dict,          # backbone weights
      "head_state": state_dict,     # classification head (may be {})
      "loss_state": state_dict,     # centers etc. (may be {})
      "step": int,
      "optimizer": state_dict | {}, "scaler": ..., "rng": {...},   # for resuming
      "metrics_window": {...}, "metrics_window_steps": int,        # (checkpoints/last.pt)
      ...                           # the run's info (pack, classes_sha256, world, ...)
    }

Versions:

1. First layout.
2. ``input_spec`` added, so the crop geometry and normalisation a model was trained on
   travel with it (embed aligns raw photos with it, export writes it into the ONNX
   metadata) instead of being guessed from ``input_size``. ``config`` became nested
   (``center`` and ``margin`` tables; ``facecl.train.config.config_from_dict`` reads both).
   Version 1 files still load: :func:`checkpoint_input_spec` derives their spec.

Written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from facecl import __version__
from facecl.artifacts import honour_umask
from facecl.errors import CheckpointError, ConfigError
from facecl.models.input_spec import InputSpec

FORMAT = "facecl.checkpoint"
VERSION = 2  # see the module docstring for what each version changed


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    path = Path(path)
    data = {"format": FORMAT, "version": VERSION, "facecl_version": __version__, **payload}
    for key in ("arch", "arch_kwargs", "feature_dim", "input_size", "model"):
        if key not in data:
            raise ValueError(f"checkpoint payload lacks {key!r}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    honour_umask(tmp, fd)  # mkstemp makes 0600; any other file gets 0666 & ~umask
    os.close(fd)
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    except RuntimeError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _stream_error(e, path) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stream_error(e: RuntimeError, path: Path) -> BaseException:
    """torch.save reports a failed write as a RuntimeError without the errno: as an OSError
    on ``path`` (ENOSPC when the file system is nearly full, else EIO); others unchanged."""
    import errno
    import shutil

    from facecl.oserrors import is_storage_failure

    if not is_storage_failure(e):
        return e
    full = shutil.disk_usage(path.parent).free < (1 << 20)
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", "pass a run directory or .pt file")
    try:
        # mmap: tensors are paged in when used, so embed and export (backbone only) and a
        # resume's step check do not read the head and centers of a large run into memory
        mmap = map_location == "cpu"
        data = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"refusing {path}: it holds pickled objects, not only tensors and plain data",
                "only load checkpoints written by facecl",
            ) from None
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({first[:120]})", "is the file truncated?"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a facecl checkpoint", "pass a file from facecl train")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data['version']} (this facecl reads {VERSION})",
            "upgrade facecl",
        )
    return data


def build_backbone(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the backbone described by a checkpoint and load its weights (eval mode)."""
    from facecl.models import create_backbone

    kwargs = ckpt.get("arch_kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(
            f"checkpoint arch_kwargs is {type(kwargs).__name__}, expected a dict",
            "the checkpoint is corrupt or was edited",
        )
    try:  # a name the checkpoint holds is bad data (exit 1), not a bad option
        model = create_backbone(ckpt["arch"], **kwargs)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint: {e.message}", e.hint) from None
    except TypeError as e:
        raise CheckpointError(
            f"checkpoint arch_kwargs {sorted(kwargs)} do not fit architecture "
            f"{ckpt['arch']!r}: {str(e).splitlines()[0][:160]}",
            "the checkpoint was written by another facecl version, or edited",
        ) from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint weights do not fit architecture {ckpt['arch']!r}: "
            f"{str(e).splitlines()[0][:160]}",
            "the checkpoint is corrupt or was edited",
        ) from None
    return model.eval()


def checkpoint_input_spec(ckpt: dict[str, Any]) -> InputSpec:
    """The crop geometry and normalisation a checkpoint's model was trained on.

    Checkpoints record it as ``input_spec``; one without it (written before the key existed)
    is read as its ``input_size`` with the align template of that size, if there is one.
    """
    if isinstance(ckpt.get("input_spec"), dict):
        return InputSpec.from_dict(ckpt["input_spec"])
    h, w = (int(v) for v in ckpt["input_size"])
    from facecl.align.transform import SIZES

    for name, hw in SIZES.items():
        if hw == (h, w):
            return InputSpec.for_template(name)
    channels = int(ckpt.get("arch_kwargs", {}).get("in_channels", 3))
    return InputSpec(size=(h, w), channels=channels, color="RGB" if channels == 3 else "L")
