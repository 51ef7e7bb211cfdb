"""A model reference is an artifact reference: how embed and export name their model.

A manifest's inputs name the model twice:

* the train run it belongs to, as an artifact (``facecl.artifacts.input_ref``: kind
  ``artifact``, the run manifest's hash), so ``facecl inspect`` walks on to the run's pack,
  its align and the raw photos; for an ONNX file, the train runs its export sidecar
  (``model.onnx.json``) references, when the sidecar describes this very file;
* the model file itself (kind ``file``, role ``model``, its sha256), so the fingerprint
  changes whenever the weights do, even in a run whose manifest did not.

A loose checkpoint (not in a complete run) is named by its file only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facecl.artifacts import input_ref
from facecl.embed.backends import ModelFile

MODEL_ROLE = "model"
RUN_ROLE = "train_run"


def sidecar_path(onnx_path: Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``: the manifest-shaped file ``facecl export`` writes."""
    return onnx_path.with_name(onnx_path.name + ".json")


def read_sidecar(side: Path) -> dict[str, Any]:
    """The sidecar as a dict, ``{}`` when absent or not JSON."""
    try:
        doc = json.loads(side.read_text()) if side.is_file() else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def model_run(model: ModelFile) -> Path | None:
    """The complete train run a checkpoint file sits in, or None."""
    from facecl.train.run import run_of

    return run_of(model.path) if model.kind == "checkpoint" else None


def model_inputs(model: ModelFile) -> list[dict[str, str]]:
    """The manifest inputs that reference ``model``: its train run(s), then the file."""
    runs: list[dict[str, str]] = []
    run = model_run(model)
    if run is not None:
        runs.append({**input_ref(run), "role": RUN_ROLE})
    elif model.kind == "onnx":
        side = read_sidecar(sidecar_path(model.path))
        if side.get("extra", {}).get("onnx_sha256") == model.sha256:
            runs.extend(
                {**inp, "role": RUN_ROLE}
                for inp in side.get("inputs", [])
                if inp.get("role") == RUN_ROLE and inp.get("kind") == "artifact"
            )
    return [*runs, {**model.ref(), "role": MODEL_ROLE}]
