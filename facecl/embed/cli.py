"""CLI for ``facecl embed`` and ``facecl export`` (thin: parsing, then the library)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facecl.cliconfig import Given, build, config_command
from facecl.embed.config import EmbedConfig, ExportConfig


@config_command(cfg=EmbedConfig)
def embed_command(
    model: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_OR_CHECKPOINT",
            help="A train run directory, a .pt checkpoint or an .onnx file from "
            "'facecl export' (with --onnx, leave it out and give only INPUT).",
        ),
    ],
    input_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="INPUT",
            help="An align artifact, a pack artifact, photos: a folder (identity = "
            "folder name), a list file (.txt, one path a line) or one image; or an "
            "insightface verification set (.bin: its pairs are kept for "
            "'facecl verify --protocol bin').",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output artifact directory.")] = (
        Path("embeddings")
    ),
    onnx: Annotated[
        Path | None,
        typer.Option("--onnx", help="Run this ONNX model on onnxruntime instead of torch."),
    ] = None,
    *,
    cfg: Given,
    force: Annotated[bool, typer.Option("--force", help="Rebuild an existing output.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Face embeddings: FC1 of each aligned face and of its mirror image, fused."""
    from facecl.console import emit_json
    from facecl.embed.stage import run_embed

    model, input_path = _model_and_input(model, input_path, onnx)
    config = build(EmbedConfig, cfg)
    result = run_embed(model, input_path, out, config, force=force, show_progress=not json_out)
    s = result.summary()
    if json_out:
        emit_json(s)
        return
    _print_embed(s, up_to_date=result.up_to_date)


def _model_and_input(model: Path, input_path: Path | None, onnx: Path | None) -> tuple[Path, Path]:
    """The model and the input to embed: with ``--onnx`` the one positional is the INPUT."""
    from facecl.errors import UsageError

    if onnx is not None:
        if input_path is not None:
            raise UsageError(
                "both RUN_OR_CHECKPOINT and --onnx given",
                "give one model: 'facecl embed --onnx model.onnx INPUT -o EMB'",
            )
        if onnx.suffix.lower() != ".onnx":
            raise UsageError(
                f"--onnx {onnx}: not an .onnx file (it would run on torch, not onnxruntime)",
                "pass a model from 'facecl export' to --onnx, or a checkpoint as "
                "RUN_OR_CHECKPOINT without --onnx",
            )
        model, input_path = onnx, model
    if input_path is None:
        raise UsageError("missing INPUT", "usage: facecl embed RUN_OR_CHECKPOINT INPUT -o EMB")
    return model, input_path


def _print_embed(s: dict[str, Any], *, up_to_date: bool) -> None:
    """One line on what was written (or that it was up to date), then the skipped reasons."""
    from facecl.console import console

    if up_to_date:
        console.print(f"[green]up to date[/] {s['output']} (same model, input and config)")
        return
    console.print(
        f"[green]wrote[/] {s['output']}: {s['ok']}/{s['items']} faces embedded, "
        f"dim {s['dim']} ({s['fusion']}{', l2' if s['l2'] else ''}, {s['backend']}), "
        f"{s['images_per_s']:.1f} img/s"
    )
    for reason, n in sorted(s["skipped"].items(), key=lambda kv: -kv[1]):
        console.print(f"  [yellow]{n}[/] without embedding: {reason}")


@config_command(cfg=ExportConfig)
def export_command(
    run: Annotated[
        Path, typer.Argument(metavar="RUN", help="A train run directory or .pt checkpoint.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")] = Path(
        "model.onnx"
    ),
    *,
    cfg: Given,
    verify_on: Annotated[
        Path | None,
        typer.Option(
            help="Aligned faces for the parity check (align artifact, folder of crops, or "
            "a verification .bin for --insightface); default: the bundled faces."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Export a trained backbone to ONNX (dynamic batch) and check it against torch."""
    from facecl.console import console, emit_json
    from facecl.embed.export import run_export

    report = run_export(run, out, build(ExportConfig, cfg), verify_on=verify_on, force=force)
    if json_out:
        emit_json(report)
        return
    if report["up_to_date"]:
        console.print(f"[green]up to date[/] {report['output']}")
        return
    console.print(
        f"[green]wrote[/] {report['output']} (opset {report['opset']}, "
        f"output dim {report['output_dim']}, fusion in graph: {report['fusion_in_graph']}); "
        f"parity on {report['parity_faces']} faces: max cosine distance "
        f"{report['parity_max_cosine_distance']:.2e}"
    )


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)
    app.command("export")(export_command)
