"""``facecl export RUN -o m.onnx --insightface``: a model insightface's ``model_zoo`` loads.

``insightface.model_zoo.get_model(path)`` routes an ONNX file by its input shape: a square
input of 112 (or more, a multiple of 16) is a recognition model, ``ArcFaceONNX``. That class
looks at the first 8 nodes: when it finds a node named ``Sub...`` and one named ``Mul...`` it
takes the normalisation to be inside the graph and feeds raw pixels, else it applies
``(x - 127.5) / 127.5`` itself (not facecl's ``/ 128``). So the graph written here is:

    data   float32 (N, 3, 112, 112)  RGB, 0..255, an ArcFace-aligned crop
    Sub_normalise   x - mean          (the model's InputSpec: 127.5)
    Mul_normalise   x * (1 / scale)   (1 / 128)
    Slice_template  rows/columns of the model's template window (112x96: columns 8..104;
                    absent for a 112x112 model)
    ... the backbone ...
    fc1    float32 (N, D)            FC1, the only output

The ONNX metadata describe the file's own input (112x112 ArcFace template, mean 0, scale 1),
so ``facecl embed --onnx`` runs it correctly too; ``backbone_input_spec`` keeps the
backbone's. The parity check compares torch on the fitted crops with onnxruntime on the
raw 112x112 crops.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from facecl.embed.binfit import ARCFACE_SIZE, fit_description
from facecl.errors import ArtifactError, InputError, UsageError
from facecl.models.input_spec import InputSpec

INPUT_NAME = "data"
OUTPUT_NAME = "fc1"
NORM_NODES = ("Sub_normalise", "Mul_normalise")


def file_spec() -> InputSpec:
    """The input of an insightface export: raw 0..255 RGB 112x112 ArcFace crops."""
    return dataclasses.replace(InputSpec.for_template("112x112"), mean=0.0, scale=1.0)


def window(spec: InputSpec) -> tuple[int, int, int, int] | None:
    """The (top, left, height, width) the graph cuts from the 112x112 crop (None: all)."""
    cut, how = fit_description(spec)
    if cut is None and spec.size != ARCFACE_SIZE:
        raise UsageError(
            f"--insightface needs a model on 112x112 or 112x96 aligned crops ({how})",
            "export without --insightface",
        )
    return cut


def wrap_graph(path: str, spec: InputSpec, backbone_input: str, backbone_output: str) -> None:
    """Put the normalisation (and the template window) in front of the exported backbone,
    rename its input to ``data`` (N, 3, 112, 112) and its output to ``fc1``; in place."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    g = model.graph
    cut = window(spec)
    consts = [
        numpy_helper.from_array(np.array(spec.mean, np.float32), "facecl_mean"),
        numpy_helper.from_array(np.array(1.0 / spec.scale, np.float32), "facecl_inv_scale"),
    ]
    normed = "facecl_normalised" if cut is not None else backbone_input
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "facecl_mean"], ["facecl_centred"], NORM_NODES[0]),
        helper.make_node("Mul", ["facecl_centred", "facecl_inv_scale"], [normed], NORM_NODES[1]),
    ]
    if cut is not None:
        top, left, h, w = cut
        for name, values in (("starts", [top, left]), ("ends", [top + h, left + w])):
            consts.append(numpy_helper.from_array(np.array(values, np.int64), f"facecl_{name}"))
        consts.append(numpy_helper.from_array(np.array([2, 3], np.int64), "facecl_axes"))
        nodes.append(
            helper.make_node(
                "Slice",
                [normed, "facecl_starts", "facecl_ends", "facecl_axes"],
                [backbone_input],
                "Slice_template",
            )
        )
    for node in g.node:
        node.output[:] = [OUTPUT_NAME if o == backbone_output else o for o in node.output]
    backbone_nodes = list(g.node)
    del g.node[:]
    g.node.extend(nodes + backbone_nodes)  # ours first: insightface looks at nodes 0..7
    g.initializer.extend(consts)
    del g.input[:]
    g.input.append(
        helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, *ARCFACE_SIZE])
    )
    out = g.output[0]
    out.name = OUTPUT_NAME
    onnx.save(model, path)


def metadata(spec: InputSpec) -> dict[str, str]:
    """metadata_props of an insightface export (on top of the usual ones)."""
    from facecl.embed.export import spec_metadata

    return {
        **spec_metadata(file_spec()),
        "backbone_input_spec": json.dumps(spec.to_dict(), sort_keys=True),
        "insightface": "ArcFaceONNX: input data (N,3,112,112) RGB 0..255, output fc1",
    }


def arcface_faces(path: str | os.PathLike | None, spec: InputSpec, limit: int) -> np.ndarray:
    """Up to ``limit`` 112x112 ArcFace crops (N, 112, 112, 3) uint8 for the parity check:
    the 112x112 images of ``path`` (a .bin, an align artifact or a folder of crops), or crops
    of the model's own size placed in their window (zeros around) when there are none (the
    bundled 112x96 faces)."""
    from facecl.embed.export import load_faces

    try:
        return load_faces(path, ARCFACE_SIZE, limit)
    except InputError:
        cut = window(spec)
        if cut is None:
            raise
    top, left, h, w = cut
    small = load_faces(path, (h, w), limit)
    faces = np.zeros((len(small), *ARCFACE_SIZE, 3), np.uint8)
    faces[:, top : top + h, left : left + w] = small
    return faces


def check_parity(
    backbone: Any, path: str, faces: np.ndarray, spec: InputSpec, min_parity: float
) -> dict[str, Any]:
    """torch on the fitted, normalised crops vs onnxruntime on the raw 112x112 crops."""
    import onnxruntime as ort
    import torch

    from facecl.embed.binfit import fit
    from facecl.embed.export import cosine_rows
    from facecl.embed.features import preprocess

    cut = window(spec)
    fitted = np.stack([fit(f, cut) for f in faces])
    with torch.inference_mode():
        ref = backbone(torch.from_numpy(preprocess(fitted, spec))).numpy()  # (N, D)
    raw = np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32)  # (N,3,112,112)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {INPUT_NAME: raw})[0]
    one = np.concatenate([sess.run(None, {INPUT_NAME: raw[i : i + 1]})[0] for i in range(len(raw))])
    cos = np.minimum(cosine_rows(ref, got), cosine_rows(ref, one))
    if got.shape != ref.shape or not np.isfinite(cos).all() or cos.min() < min_parity:
        raise ArtifactError(
            f"insightface export disagrees with torch: min cosine {np.nanmin(cos):.6f} "
            f"< {min_parity} on {len(raw)} faces",
            "the file was not written; try another --opset",
        )
    return {
        "parity_faces": int(len(raw)),
        "parity_min_cosine": float(cos.min()),
        "parity_max_cosine_distance": float(1.0 - cos.min()),
        "parity_max_abs_diff": float(max(np.abs(ref - got).max(), np.abs(ref - one).max())),
        "min_parity": min_parity,
    }


__all__ = ["wrap_graph", "metadata", "arcface_faces", "check_parity", "file_spec"]
