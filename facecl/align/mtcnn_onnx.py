"""MTCNN's three nets on onnxruntime (CPU), from the same vendored weights.

Each torch net of :func:`facecl.align.mtcnn.load_nets` is exported to ONNX (a temporary
file, read back) when the detector is built, with a dynamic batch (P-Net also a dynamic
height and width), and opened as an onnxruntime CPU session: no second copy of the weights
ships or needs a checksum. The wrapper takes and returns torch tensors, so the detector's
box code is the same for both. Outputs equal torch's to ~3e-6 (float32 rounding).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn


class OrtNet:
    """An onnxruntime session called like the torch net: (N, 3, H, W) -> tuple of tensors."""

    def __init__(self, net: nn.Module, example: torch.Tensor, spatial: bool, threads: int = 0):
        import onnxruntime as ort

        axes = {0: "n", 2: "h", 3: "w"} if spatial else {0: "n"}
        with tempfile.TemporaryDirectory(prefix="facecl-mtcnn-") as tmp:
            path = Path(tmp) / "net.onnx"
            torch.onnx.export(
                net, (example,), path, opset_version=17, input_names=["x"],
                dynamic_axes={"x": axes}, dynamo=False,
            )  # fmt: skip
            model = path.read_bytes()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only
        if threads:
            opts.intra_op_num_threads = threads
        self.session: Any = ort.InferenceSession(
            model, sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {"x": x.detach().cpu().contiguous().numpy()}
        return tuple(torch.from_numpy(o) for o in self.session.run(None, feed))


def onnx_nets(nets: tuple[nn.Module, nn.Module, nn.Module]) -> tuple[OrtNet, OrtNet, OrtNet]:
    """P-, R- and O-Net of ``load_nets`` as onnxruntime sessions on torch's thread count."""
    import warnings

    threads = torch.get_num_threads()
    pnet, rnet, onet = (n.to(memory_format=torch.contiguous_format) for n in nets)
    with warnings.catch_warnings():  # the exporter's deprecation notes are not ours to act on
        warnings.simplefilter("ignore")
        return (
            OrtNet(pnet, torch.zeros(1, 3, 24, 24), True, threads),
            OrtNet(rnet, torch.zeros(2, 3, 24, 24), False, threads),
            OrtNet(onet, torch.zeros(2, 3, 48, 48), False, threads),
        )
