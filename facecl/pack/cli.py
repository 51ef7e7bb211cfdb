"""CLI for `facecl pack` (placeholder until issue #5 lands)."""

from __future__ import annotations

import typer

from facecl.stub import register_stub


def register(app: typer.Typer) -> None:
    register_stub(
        app,
        "pack",
        "Pack aligned faces into HDF5 shards, filtering identities that overlap evaluation sets.",
        5,
    )
