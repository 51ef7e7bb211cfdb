"""Commands that are in the interface but not built yet: they say so and exit 2."""

from __future__ import annotations

import typer

from facecl.errors import NotBuiltError


def register_stub(app: typer.Typer, name: str, help_text: str, issue: int) -> None:
    @app.command(
        name,
        help=f"{help_text} [not built yet: issue #{issue}]",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def _stub(ctx: typer.Context) -> None:
        raise NotBuiltError(f"'facecl {name}' is not built yet", f"tracked in issue #{issue}")
