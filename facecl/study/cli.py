"""CLI for `facecl study`: the reproducible full-LFW study (issue #9)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("study")
    def study(
        config: Annotated[Path, typer.Argument(help="Study config (TOML), see experiments/.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Study directory.")] = Path(
            "runs/study"
        ),
        variant: Annotated[
            list[str] | None, typer.Option(help="Run only these variants (repeatable).")
        ] = None,
        seed: Annotated[
            list[int] | None, typer.Option(help="Run only these seeds (repeatable).")
        ] = None,
        results: Annotated[
            Path | None, typer.Option(help="Write the results table here (markdown).")
        ] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Align, pack, train every variant x seed, embed, verify; then a results table."""
        from facecl.console import console, emit_json
        from facecl.study.config import load_study_config
        from facecl.study.results import render_markdown
        from facecl.study.runner import run_study

        cfg = load_study_config(config)
        doc = run_study(cfg, out, variants=variant, seeds=seed)
        cmd = f"facecl study {config} -o {out}" + (f" --results {results}" if results else "")
        md = render_markdown(doc, cmd)
        (out / "results.md").write_text(md)
        if results:
            results.parent.mkdir(parents=True, exist_ok=True)
            results.write_text(md)
        if json_out:
            emit_json(doc)
        else:
            console.print(md)
