"""CLI for `facecl study` (placeholder until issue #9 lands)."""

from __future__ import annotations

import typer

from facecl.stub import register_stub


def register(app: typer.Typer) -> None:
    register_stub(app, "study", "Run the whole chain on full LFW for every loss variant.", 9)
