"""``run_export``: a trained backbone -> one self-describing, self-checked ONNX file.

Output: ``model.onnx`` (written to a temp file and moved into place with ``os.replace``) and
a sidecar ``model.onnx.json`` shaped like a facecl manifest (schema ``facecl.export/1``:
config, inputs (the train run as an artifact and the checkpoint file, see
:mod:`facecl.embed.model_ref`), fingerprint, and in ``extra`` the parity report, the input
spec and the ONNX file's sha256). Re-running with the same checkpoint and config is a no-op;
a different one needs ``--force``.

The graph: input ``input`` float32 (N, 3, H, W) = RGB ``(x - mean) / scale`` of the model's
:class:`~facecl.models.input_spec.InputSpec`, output ``features`` float32 (N, D) (FC1), or
(N, D') with the flip fusion baked in (``--with-flip``). The batch dimension is dynamic.
``metadata_props`` (all strings): ``input_spec`` (the InputSpec as JSON: size, template,
landmarks, color, channels, mean, scale), ``facecl_version``, ``arch``, ``input_size``
("112x96", HxW), ``input_layout`` ("NCHW"), and derived from the spec ``color`` ("RGB"),
``normalisation``, ``mean`` ("127.5"), ``scale`` ("128"); ``feature_dim`` (FC1 size),
``output_dim``, ``fusion`` ("none" or the baked fusion), ``opset``, ``checkpoint_sha256``,
``train_config_sha256``.

Before the file is moved into place it is checked: onnxruntime and torch (float32, CPU) run
the same real aligned faces (the bundled ones in ``facecl/embed/faces/`` unless
``verify_on`` is given) at two batch sizes; every face must have cosine >= ``min_parity``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from facecl import __version__
from facecl.artifacts import (
    Manifest,
    atomic_write_json,
    config_dict,
    fingerprint,
    honour_umask,
    input_ref,
    schema_for,
    sha256_file,
    sha256_json,
)
from facecl.embed import insightface_export as ie
from facecl.embed.backends import resolve_model
from facecl.embed.config import ExportConfig
from facecl.embed.features import FlipFusion, fused_dim, preprocess
from facecl.embed.model_ref import model_inputs, read_sidecar, sidecar_path
from facecl.embed.sources import open_source
from facecl.errors import ArtifactError, CheckpointError, InputError
from facecl.models.input_spec import LAYOUT, InputSpec
from facecl.outpath import check_output

BUNDLED_FACES = Path(__file__).resolve().parent / "faces"
INPUT_NAME = "input"
OUTPUT_NAME = "features"


def load_faces(path: str | os.PathLike | None, size: tuple[int, int], limit: int) -> np.ndarray:
    """Up to ``limit`` aligned faces (N, H, W, 3) uint8 of ``size`` from an align/pack
    artifact or a folder of crops; the bundled faces when ``path`` is None."""
    src = open_source(path if path is not None else BUNDLED_FACES, assume_aligned=True)
    faces = []
    for img in src.images(0):
        if not isinstance(img, str) and img.shape == (*size, 3):
            faces.append(img)
            if len(faces) == limit:
                break
    if not faces:
        raise InputError(
            f"no {size[0]}x{size[1]} aligned faces to check the export on in "
            f"{path if path is not None else BUNDLED_FACES}",
            "pass --verify-on with an align artifact or a folder of crops of the model's size",
        )
    return np.stack(faces)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,D),(N,D) -> (N,) cosine similarity of matching rows (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(den, 1e-300)


def run_export(
    run: str | os.PathLike,
    out: str | os.PathLike,
    config: ExportConfig,
    *,
    verify_on: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Export the backbone of ``run`` (a train run directory or .pt) to ``out`` (.onnx)."""
    from facecl.train.checkpoint import build_backbone, checkpoint_input_spec, load_checkpoint

    model_file = resolve_model(run)
    if model_file.kind != "checkpoint":
        raise CheckpointError(
            f"{model_file.path} is already an ONNX file", "pass a train run or .pt checkpoint"
        )
    inputs = model_inputs(model_file)
    if verify_on is not None:
        inputs.append(input_ref(verify_on))
    # never over the checkpoint, nor into the run (or any input) directory
    out = check_output(out, [i["path"] for i in inputs])
    side = sidecar_path(out)
    fp = fingerprint("export", config_dict(config), inputs)
    previous = _existing_report(out, fp, force)
    if previous is not None:
        return previous

    ckpt = load_checkpoint(model_file.path)
    for key in ("arch", "model", "feature_dim", "input_size"):
        if key not in ckpt:
            raise CheckpointError(f"{model_file.path} lacks {key!r}", "pass a facecl checkpoint")
    backbone = build_backbone(ckpt).float()
    spec = checkpoint_input_spec(ckpt)
    h, w = spec.size
    feature_dim = int(getattr(backbone, "feature_dim", ckpt["feature_dim"]))
    fusion = config.baked_fusion
    module = FlipFusion(backbone, fusion).eval() if config.with_flip else backbone
    out_dim = fused_dim(feature_dim, fusion)
    meta = {
        **(ie.metadata(spec) if config.insightface else spec_metadata(spec)),
        "facecl_version": __version__,
        "arch": str(ckpt["arch"]),
        "feature_dim": str(feature_dim),
        "output_dim": str(out_dim),
        "fusion": fusion,
        "opset": str(config.opset),
        "checkpoint_sha256": model_file.sha256,
        "train_config_sha256": sha256_json(ckpt.get("config", {})),
    }
    report = _write_checked(module, spec, out, meta, config, verify_on)
    report = {
        **report,
        "output": str(out),
        "sidecar": str(side),
        "opset": config.opset,
        "input_size": [h, w] if not config.insightface else list(ie.ARCFACE_SIZE),
        "insightface": config.insightface,
        "output_dim": out_dim,
        "fusion_in_graph": fusion,
        "up_to_date": False,
    }
    extra = {"input_spec": spec.to_dict(), "metadata": meta, "report": report}
    _write_sidecar(out, config, inputs, fp, extra)
    return report


def _write_checked(
    module: Any,
    spec: InputSpec,
    out: Path,
    meta: dict[str, str],
    config: ExportConfig,
    verify_on: str | os.PathLike | None,
) -> dict[str, Any]:
    """Export ``module`` to a temp file beside ``out``, add the metadata, check it against
    torch on real faces and move it into place; the parity report. With ``insightface`` the
    graph is wrapped for insightface's model_zoo (:mod:`facecl.embed.insightface_export`)."""
    n = config.verify_max_images
    if config.insightface:
        faces = ie.arcface_faces(verify_on, spec, n)  # (N,112,112,3)
    else:
        faces = load_faces(verify_on, spec.size, n)  # (N,H,W,3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    honour_umask(tmp, fd)  # mkstemp makes 0600; any other file gets 0666 & ~umask
    os.close(fd)
    try:
        _export_onnx(module, spec.size, tmp, config.opset)
        if config.insightface:
            ie.wrap_graph(tmp, spec, INPUT_NAME, OUTPUT_NAME)
        _finish_model(tmp, meta)
        if config.insightface:
            report = ie.check_parity(module, tmp, faces, spec, config.min_parity)
        else:
            report = _check_parity(module, tmp, faces, config.min_parity, spec)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return report


def _existing_report(out: Path, fp: str, force: bool) -> dict[str, Any] | None:
    """The report of an identical export already at ``out`` (None: write it). Raises for
    a directory, or another export there without ``force``."""
    if not out.exists():
        return None
    if out.is_dir():
        raise ArtifactError(f"output {out} is a directory", "pass a file name like model.onnx")
    if force:
        return None
    side = sidecar_path(out)
    prev = read_sidecar(side)
    if prev.get("fingerprint") == fp and prev.get("extra", {}).get("onnx_sha256") == sha256_file(
        out
    ):
        return {**prev["extra"]["report"], "output": str(out), "up_to_date": True}
    why = "another checkpoint or config" if prev else "no matching sidecar"
    raise ArtifactError(
        f"output {out} exists ({why}: {side.name})",
        "use --force to overwrite it, or choose another -o path",
    )


def _write_sidecar(
    out: Path,
    config: ExportConfig,
    inputs: list[dict[str, str]],
    fp: str,
    extra: dict[str, Any],
) -> None:
    """``model.onnx.json``: a manifest of the export (schema ``facecl.export/1``)."""
    manifest = Manifest(
        schema=schema_for("export"),
        stage="export",
        config=config_dict(config),
        inputs=inputs,
        counts={"processed": 1, "written": 1, "skipped": {}},
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        fingerprint=fp,
        extra={"onnx_sha256": sha256_file(out), **extra},
    )
    atomic_write_json(sidecar_path(out), manifest.to_dict())


def spec_metadata(spec: InputSpec) -> dict[str, str]:
    """The ONNX metadata_props of an input spec: ``input_spec`` (JSON) and the flat keys
    older readers (and people) use, all derived from it."""
    return {
        "input_spec": json.dumps(spec.to_dict(), sort_keys=True),
        "input_size": spec.size_text,
        "input_layout": LAYOUT,
        "color": spec.color,
        "normalisation": spec.normalisation,
        "mean": f"{spec.mean:g}",
        "scale": f"{spec.scale:g}",
    }


def _export_onnx(module: Any, size: tuple[int, int], path: str, opset: int) -> None:
    import torch

    dummy = torch.zeros(2, 3, *size)  # (N,3,H,W)
    with warnings.catch_warnings():
        # The TorchScript exporter needs no onnxscript; it is deprecated but stable here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (dummy,),
            path,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def _finish_model(path: str, meta: dict[str, str]) -> None:
    """metadata_props and producer; checked and saved in place."""
    import onnx

    model = onnx.load(path)
    del model.metadata_props[:]
    for k, v in sorted(meta.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, str(v)
    model.producer_name = "facecl"
    model.producer_version = __version__
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _check_parity(
    module: Any, path: str, faces: np.ndarray, min_parity: float, spec: InputSpec | None = None
) -> dict[str, Any]:
    """torch (float32, CPU) vs onnxruntime on ``faces`` (N,H,W,3), whole batch and batch 1."""
    import onnxruntime as ort
    import torch

    x = preprocess(faces, spec)  # (N,3,H,W)
    with torch.inference_mode():
        ref = module(torch.from_numpy(x)).numpy()  # (N,D)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT_NAME: x})[0]
    one = np.concatenate([sess.run(None, {INPUT_NAME: x[i : i + 1]})[0] for i in range(len(x))])
    if got.shape != ref.shape:
        raise ArtifactError(
            f"exported model gives shape {got.shape}, torch {ref.shape}", "report this as a bug"
        )
    cos = np.minimum(cosine_rows(ref, got), cosine_rows(ref, one))
    report = {
        "parity_faces": int(len(x)),
        "parity_min_cosine": float(cos.min()),
        "parity_max_cosine_distance": float(1.0 - cos.min()),
        "parity_max_abs_diff": float(max(np.abs(ref - got).max(), np.abs(ref - one).max())),
        "min_parity": min_parity,
    }
    if not np.isfinite(cos).all() or cos.min() < min_parity:
        raise ArtifactError(
            f"ONNX export disagrees with torch: min cosine {cos.min():.6f} < {min_parity} "
            f"on {len(x)} faces",
            "the file was not written; try another --opset",
        )
    return report


__all__ = ["run_export", "sidecar_path", "load_faces", "cosine_rows"]
