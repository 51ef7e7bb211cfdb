"""``facecl align``: detect faces with MTCNN and align them to 112x96 (or 112x112) crops."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer


def _default(name: str) -> str:
    """'[default: X]' from AlignConfig / AlignRuntime, the only home of the defaults
    (escaped for rich markup). Cheap: the config module imports no heavy library."""
    from dataclasses import fields

    from facecl.align.config import AlignConfig, AlignRuntime

    for cls in (AlignConfig, AlignRuntime):
        for f in fields(cls):
            if f.name == name:
                v = f.default
                text = ",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v}"
                return f"\\[default: {text}]"
    raise KeyError(name)


class Size(str, Enum):
    s112x96 = "112x96"
    s112x112 = "112x112"


class OnMiss(str, Enum):
    skip = "skip"
    landmarks = "landmarks"
    center = "center"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def register(app: typer.Typer) -> None:
    @app.command("align")
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
        size: Annotated[
            Size | None, typer.Option(help=f"Crop size HxW. {_default('size')}")
        ] = None,
        min_face: Annotated[
            float | None, typer.Option(help=f"Smallest face in pixels. {_default('min_face')}")
        ] = None,
        thresholds: Annotated[
            str | None,
            typer.Option(help=f"P/R/O-Net thresholds. {_default('thresholds')}"),
        ] = None,
        factor: Annotated[
            float | None, typer.Option(help=f"Pyramid scale factor. {_default('factor')}")
        ] = None,
        all_faces: Annotated[
            bool, typer.Option("--all-faces", help="Keep every face, not the central one.")
        ] = False,
        on_miss: Annotated[
            OnMiss | None,
            typer.Option(
                help="No face found: skip the image, use --landmarks, or a centre crop. "
                f"{_default('on_miss')}"
            ),
        ] = None,
        landmarks: Annotated[
            Path | None,
            typer.Option(help="Provided landmarks ('<path> x1 y1 .. x5 y5' or a faces.csv)."),
        ] = None,
        max_side: Annotated[
            int | None,
            typer.Option(
                help="Longer side above which detection runs on a reduced copy. "
                + _default("max_side")
            ),
        ] = None,
        max_pixels: Annotated[
            int | None,
            typer.Option(
                help=f"Images with more pixels are skipped as too_large. {_default('max_pixels')}"
            ),
        ] = None,
        chunk_size: Annotated[
            int | None, typer.Option(help=f"Images per resumable chunk. {_default('chunk_size')}")
        ] = None,
        shard: Annotated[
            str | None, typer.Option(help="Process slice K of N (1-based), e.g. 2/8.")
        ] = None,
        merge: Annotated[
            bool, typer.Option("--merge", help="Merge shard outputs (the arguments) into -o.")
        ] = False,
        device: Annotated[
            Device | None, typer.Option(help=f"Where MTCNN runs. {_default('device')}")
        ] = None,
        batch_size: Annotated[
            int | None, typer.Option(help=f"Images per detector batch. {_default('batch_size')}")
        ] = None,
        workers: Annotated[
            int | None, typer.Option(help=f"Decode/encode threads. {_default('workers')}")
        ] = None,
        force: Annotated[bool, typer.Option("--force", help="Rebuild a complete output.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    ) -> None:
        """Detect faces (MTCNN) and align them with a 5-point similarity transform.

        Writes OUT/aligned/<identity>/<stem>.png, OUT/faces.csv (one row per face or
        skipped image, with status and reason) and OUT/manifest.json. A killed run resumes
        where it stopped; bad images are listed, never fatal.
        """
        from facecl.align.config import AlignConfig, AlignRuntime, parse_thresholds
        from facecl.errors import UsageError

        given: dict[str, Any] = {
            "size": size.value if size else None,
            "min_face": min_face,
            "thresholds": parse_thresholds(thresholds) if thresholds else None,
            "factor": factor,
            "all_faces": all_faces or None,
            "on_miss": on_miss.value if on_miss else None,
            "max_side": max_side,
            "max_pixels": max_pixels,
            "chunk_size": chunk_size,
            "shard": shard,
        }
        rt_given = {
            "device": device.value if device else None,
            "batch_size": batch_size,
            "workers": workers,
        }
        runtime = AlignRuntime(**{k: v for k, v in rt_given.items() if v is not None})
        if merge:
            extra = [k for k, v in given.items() if v is not None] + (
                ["landmarks"] * bool(landmarks)
            )
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
        cfg = AlignConfig(**{k: v for k, v in given.items() if v is not None})

        def job(cb):
            from facecl.align.stage import run_align

            return run_align(
                cfg,
                inputs[0],
                out,
                runtime=runtime,
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
