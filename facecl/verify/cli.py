"""CLI for `facecl verify` (placeholder until issue #8 lands)."""

from __future__ import annotations

import typer

from facecl.stub import register_stub


def register(app: typer.Typer) -> None:
    register_stub(
        app, "verify", "LFW 10-fold, BLUFR and ROC evaluation of an embeddings artifact.", 8
    )
