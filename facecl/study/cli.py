"""CLI for `facecl study`: the reproducible full-LFW study (issue #9)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from facecl.study.config import StudyConfig
    from facecl.study.ledger import Ledger


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
        ledger: Annotated[
            Path | None,
            typer.Option(
                help="Keep every run's metrics in this JSON file (commit it): the table also "
                "counts the runs it holds from earlier sessions with the same config; with "
                "--results, it records the table as a look at the claims."
            ),
        ] = None,
        report_only: Annotated[
            bool,
            typer.Option("--report-only", help="Run nothing: re-render the table from study.json."),
        ] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    ) -> None:
        """Align, pack, train every variant x seed, embed, verify; then a results table."""
        import shutil

        from facecl.console import console, emit_json
        from facecl.errors import FaceclError
        from facecl.study.config import load_study_config
        from facecl.study.ledger import read_ledger, record_study, with_ledger, write_ledger
        from facecl.study.results import claim_pairs, kept_notes, render_markdown
        from facecl.study.runner import failed_in, run_study

        cfg = load_study_config(config)
        book = read_ledger(ledger) if ledger else None
        if report_only:
            doc = _study_record(out, cfg, book)
        else:
            doc = run_study(cfg, out, variants=variant, seeds=seed)
        if book is not None and ledger is not None:
            record_study(book, cfg, doc)
            write_ledger(ledger, book)
            doc = with_ledger(cfg, doc, book)
        cmd = f"facecl study {config} -o {out}" + (f" --results {results}" if results else "")
        cmd += f" --ledger {ledger}" if ledger else ""
        targets = [out / "results.md", *([results] if results else [])]
        roc = out / "compare" / "roc_compare.png"
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            roc_name = None
            if roc.is_file():
                roc_name = f"{target.stem}_roc.png"
                shutil.copyfile(roc, target.parent / roc_name)
            # The config line names this command's config, not the checkout that ran it.
            shown = {**doc, "config": str(config)}
            md = render_markdown(shown, cmd, notes=kept_notes(target), roc=roc_name)
            target.write_text(md)
        if results and book is not None and ledger is not None:
            # A published table is a look at the claims: the next verdicts charge for it.
            book.record_look(claim_pairs(doc))
            write_ledger(ledger, book)
        if json_out:
            emit_json(doc)
        else:
            console.print(md)
        failed = [] if report_only else failed_in(doc)
        if failed:
            raise FaceclError(
                f"{len(failed)} run(s) failed: {', '.join(failed)}",
                "see their errors above; the table counts the other runs, a re-run retries them",
            )


def _study_record(out: Path, cfg: StudyConfig, book: Ledger | None) -> dict[str, Any]:
    """The study record of ``out`` for --report-only; with a ledger, a missing record is an
    empty study (the table is the ledger's)."""
    import json

    from facecl.errors import InputError
    from facecl.study.ledger import ledger_study

    path = out / "study.json"
    if not path.exists() and book is not None:
        return ledger_study(cfg, book)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(
            f"no readable study record {path} ({e})",
            "run the study first (without --report-only), or pass --ledger",
        ) from None
