"""CLI for `facecl align` (placeholder until issue #4 lands)."""

from __future__ import annotations

import typer

from facecl.stub import register_stub


def register(app: typer.Typer) -> None:
    register_stub(app, "align", "Detect faces with MTCNN and align them to 112x96 crops.", 4)
