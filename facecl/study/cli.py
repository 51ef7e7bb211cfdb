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
        report_only: Annotated[
            bool,
            typer.Option("--report-only", help="Run nothing: re-render the table from study.json."),
        ] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Align, pack, train every variant x seed, embed, verify; then a results table."""
        import json
        import shutil

        from facecl.console import console, emit_json
        from facecl.errors import InputError
        from facecl.study.config import load_study_config
        from facecl.study.results import kept_notes, render_markdown
        from facecl.study.runner import run_study

        cfg = load_study_config(config)
        if report_only:
            try:
                doc = json.loads((out / "study.json").read_text())
            except (OSError, ValueError) as e:
                raise InputError(
                    f"no readable study record {out / 'study.json'} ({e})",
                    "run the study first (without --report-only)",
                ) from None
        else:
            doc = run_study(cfg, out, variants=variant, seeds=seed)
        cmd = f"facecl study {config} -o {out}" + (f" --results {results}" if results else "")
        targets = [out / "results.md", *([results] if results else [])]
        roc = out / "compare" / "roc_compare.png"
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            roc_name = None
            if roc.is_file():
                roc_name = f"{target.stem}_roc.png"
                shutil.copyfile(roc, target.parent / roc_name)
            md = render_markdown(doc, cmd, notes=kept_notes(target), roc=roc_name)
            target.write_text(md)
        if json_out:
            emit_json(doc)
        else:
            console.print(md)
