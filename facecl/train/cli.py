"""CLI for `facecl train` (placeholder until issue #6 lands)."""

from __future__ import annotations

import typer

from facecl.stub import register_stub


def register(app: typer.Typer) -> None:
    register_stub(
        app, "train", "Train a CNN with softmax or a margin head plus a center-loss variant.", 6
    )
