"""CLI for `facecl verify`: evaluate embeddings (LFW, BLUFR, pairs, identify) or compare runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facecl.cliconfig import Given, build, config_command
from facecl.verify.config import VerifyConfig


@config_command(cfg=VerifyConfig)
def verify_command(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="The embeddings (an 'facecl embed' output, or a .h5/.npz; several with "
            "--protocol bin); with --compare, the verify report directories to overlay.",
            show_default=False,
            metavar="EMB | REPORT...",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report directory to write.")],
    *,
    cfg: Given,
    pairs: Annotated[
        Path | None,
        typer.Option(help="LFW pairs.txt (View 2), pairsDevTest.txt (View 1) or a CSV."),
    ] = None,
    train_pairs: Annotated[
        Path | None,
        typer.Option(help="lfw-view1: pairsDevTrain.txt (default: next to --pairs)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="blufr: blufr_lfw_config.mat.")
    ] = None,
    gallery: Annotated[
        Path | None, typer.Option(help="identify: gallery folder or list of keys/paths.")
    ] = None,
    probe: Annotated[
        Path | None, typer.Option(help="identify: probe folder or list of keys/paths.")
    ] = None,
    compare: Annotated[
        bool,
        typer.Option("--compare", help="Overlay the ROC curves of the given report dirs."),
    ] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing report.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Evaluate embeddings: LFW 10-fold, LFW View 1, BLUFR, a pair list, .bin sets or identification.

    Writes report.json (every number, with input hashes), roc.npz and PNG plots to -o; a summary table goes to stderr.

    [bold]facecl verify E1 E2... --protocol bin -o DIR[/] runs insightface's protocol on each embedded .bin set: one report per set in DIR/<set>/, one table.

    [bold]facecl verify --compare REPORT... -o DIR[/] overlays several reports' ROC curves in one plot and one table.
    """  # noqa: E501

    if compare:
        _compare(inputs, out, force=force, json_out=json_out)
        return
    settings = build(VerifyConfig, cfg)
    common: dict[str, Any] = dict(
        pairs=pairs,
        train_pairs=train_pairs,
        blufr_config=config,
        gallery=gallery,
        probe=probe,
        force=force,
    )
    if len(inputs) != 1:
        _verify_sets(inputs, out, settings, common, json_out=json_out)
        return
    report, reused = _verify(inputs[0], out, settings, common)
    _print_report(out, report, reused, json_out=json_out)


def _verify_sets(
    inputs: list[Path], out: Path, settings: VerifyConfig, common: dict[str, Any], *, json_out: bool
) -> None:
    """Several EMB under a protocol that takes many (bin): one report each, one table."""
    from facecl.console import console, emit_json
    from facecl.errors import UsageError
    from facecl.verify import stage
    from facecl.verify.evaluate import PROTOCOLS

    if not PROTOCOLS.get(settings.protocol).many_inputs:
        many = [n for n in PROTOCOLS.names() if PROTOCOLS.get(n).many_inputs]
        raise UsageError(
            f"--protocol {settings.protocol} takes one embeddings input, got {len(inputs)}",
            f"pass one EMB, several with --protocol {'/'.join(many)}, or --compare REPORT...",
        )
    doc = stage.run_verify_sets(inputs, out, settings, **common)
    if json_out:
        emit_json({"out": str(out), **doc})
        return
    console.print(stage.compare_table(doc, title="facecl verify"))
    for run in doc["runs"]:
        console.print(f"  {run['label']}: {run['comparability']}")
    console.print(f"wrote {out}/<set>/ and {out}/{stage.SETS}")


def _compare(inputs: list[Path], out: Path, *, force: bool, json_out: bool) -> None:
    """``--compare``: overlay the reports' ROC curves; a table on stderr or JSON on stdout."""
    from facecl.console import console, emit_json
    from facecl.verify import stage

    _, doc, reused = stage.run_compare(inputs, out, force=force)
    if json_out:
        emit_json({"out": str(out), "reused": reused, **doc})
    else:
        console.print(stage.compare_table(doc))
        console.print(f"wrote {out}/roc_compare.png" + (" (unchanged)" if reused else ""))


def _verify(
    emb: Path, out: Path, settings: VerifyConfig, common: dict[str, Any]
) -> tuple[dict[str, Any], bool]:
    """Run the protocol (with a per-trial progress bar for BLUFR); the report and whether an
    up-to-date one was reused."""
    from facecl.verify import stage
    from facecl.verify.evaluate import PROTOCOLS

    if not PROTOCOLS.get(settings.protocol).trials:
        _, report, reused = stage.run_verify(emb, out, settings, **common)
        return report, reused
    from facecl.console import progress

    with progress(transient=True) as bar:
        task = bar.add_task(f"{settings.protocol} trials", total=None, unit="trial")

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        _, report, reused = stage.run_verify(emb, out, settings, on_trial=tick, **common)
    return report, reused


def _print_report(out: Path, report: dict[str, Any], reused: bool, *, json_out: bool) -> None:
    """The summary: a table on stderr, or (``--json``) its numbers on stdout."""
    from facecl.console import console, emit_json
    from facecl.verify import stage

    if json_out:
        emit_json(
            {
                "out": str(out),
                "reused": reused,
                "protocol": report["protocol"],
                "metric": report["metric"],
                "summary": report["summary"],
                "comparable": report["comparable"],
                "comparability": report["comparability"],
                "missing": {
                    k: v for k, v in report["missing"].items() if not isinstance(v, list | dict)
                },
            }
        )
        return
    console.print(stage.summary_table(report))
    console.print(f"wrote {out}" + (" (unchanged: same config and inputs)" if reused else ""))


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
