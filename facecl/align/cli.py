"""``facecl align``: detect faces with MTCNN and align them to 112x96 (or 112x112) crops."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facecl.align.config import AlignConfig, AlignRuntime
from facecl.cliconfig import Given, Options, build, config_command


def register(app: typer.Typer) -> None:
    @app.command("align")
    @config_command(cfg=AlignConfig, runtime=Options(AlignRuntime, panel="Runtime"))
    def align(
        inputs: Annotated[
            list[Path],
            typer.Argument(
                help="ROOT/<identity>/<image> folder or a list file of '<path> <identity>' "
                "lines; with --merge: the shard outputs.",
                show_default=False,
            ),
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output artifact directory.")],
        *,
        cfg: Given,
        landmarks: Annotated[
            Path | None,
            typer.Option(help="Provided landmarks ('<path> x1 y1 .. x5 y5' or a faces.csv)."),
        ] = None,
        merge: Annotated[
            bool, typer.Option("--merge", help="Merge shard outputs (the arguments) into -o.")
        ] = False,
        runtime: Given,
        force: Annotated[bool, typer.Option("--force", help="Rebuild a complete output.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    ) -> None:
        """Detect faces (MTCNN) and align them with a 5-point similarity transform.

        Writes OUT/aligned/<identity>/<stem>.png, OUT/faces.csv (one row per face or
        skipped image, with status and reason) and OUT/manifest.json. A killed run resumes
        where it stopped; bad images are listed, never fatal.
        """
        from facecl.errors import UsageError

        rt = build(AlignRuntime, runtime)
        if merge:
            extra = [*cfg, *(["landmarks"] if landmarks else [])]
            if extra:
                opt = "--" + extra[0].replace("_", "-")
                raise UsageError(
                    f"--merge takes its settings from the shards; drop {opt}",
                    "facecl align --merge A B ... -o OUT",
                )
            _run(lambda cb: _merge(inputs, out, force), json_out, "merging")
            return
        if len(inputs) != 1:
            raise UsageError(
                f"expected one input, got {len(inputs)}",
                "pass one folder or list file (use --merge to combine shard outputs)",
            )
        config = build(AlignConfig, cfg)

        def job(cb):
            from facecl.align.stage import run_align

            return run_align(
                config,
                inputs[0],
                out,
                runtime=rt,
                landmarks=landmarks,
                force=force,
                on_progress=cb,
            )

        _run(job, json_out, "aligning")


def _merge(inputs: list[Path], out: Path, force: bool):
    from facecl.align.stage import merge_shards

    return merge_shards(inputs, out, force=force)


def _run(job, json_out: bool, what: str) -> None:
    from facecl.console import console, emit_json, progress

    with progress() as prog:
        # Hidden until work is known, so an up-to-date no-op draws no empty bar.
        task = prog.add_task(what, total=None, unit="img", visible=False)

        def cb(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total, visible=True)

        summary = job(cb)
    if json_out:
        emit_json(summary.to_dict())
        return
    _print_summary(console, summary)


def _print_summary(console, s) -> None:
    from rich.table import Table

    c = s.counts
    if s.noop:
        console.print(f"[green]up to date[/] {s.output} (same config and inputs; --force rebuilds)")
    head = f"[bold]{c.get('processed', 0)}[/] images -> [bold]{c.get('written', 0)}[/] crops"
    if s.images_per_s:
        head += f" at {s.images_per_s:.1f} img/s"
    if s.resumed:
        head += f" (resumed: {s.reused_chunks} chunk(s) kept)"
    console.print(head + f" in {s.output}")
    t = Table("status", "count", "reasons", box=None, pad_edge=False)
    for st, n in c.get("status", {}).items():
        reasons = c.get("skipped" if st == "skipped" else "fallback", {}) if st != "ok" else {}
        t.add_row(st, str(n), ", ".join(f"{k}: {v}" for k, v in reasons.items()))
    console.print(t)
    if c.get("status", {}).get("skipped"):
        console.print("skipped images are listed with their reason in faces.csv")
