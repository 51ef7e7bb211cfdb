"""CLI for `facecl embed` and `facecl export` (placeholders until issue #7 lands)."""

from __future__ import annotations

import typer

from facecl.stub import register_stub


def register(app: typer.Typer) -> None:
    register_stub(app, "embed", "Compute face embeddings (FC1 of image + flip).", 7)
    register_stub(app, "export", "Export a trained backbone to ONNX.", 7)
