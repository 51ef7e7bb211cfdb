"""``facecl pack INPUT... -o SHARDS``: aligned crops -> identity-filtered HDF5 shards.

INPUT is one or more align artifacts, one RecordIO folder (``train.rec`` + ``train.idx``, as
insightface distributes MS1M, Glint360K, ...), or with ``--prealigned`` one folder of crops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facecl.cliconfig import Given, build, config_command
from facecl.pack.config import PackConfig


def register(app: typer.Typer) -> None:
    @app.command("pack")
    @config_command(cfg=PackConfig)
    def pack(
        aligned: Annotated[
            list[Path],
            typer.Argument(
                help="One or more 'facecl align' outputs; or one RecordIO folder (train.rec "
                "+ train.idx [+ property]); or, with --prealigned, one folder of crops "
                "ROOT/<identity>/<image>."
            ),
        ],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (the pack).")],
        *,
        cfg: Given,
        force: Annotated[bool, typer.Option("--force", help="Rebuild an existing pack.")] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    ) -> None:
        """Pack aligned faces into HDF5 shards, dropping identities that overlap eval sets."""
        from facecl.console import console, emit_json, progress
        from facecl.pack.stage import run_pack

        config = build(PackConfig, cfg)
        with progress() as bar:
            # Hidden until a plan exists, so an up-to-date no-op draws no empty bar.
            task = bar.add_task("pack", total=None, unit="img", visible=False)

            def on_plan(plan, n_todo: int) -> None:
                total = plan.n_images
                bar.update(task, total=total, visible=True)
                for e in plan.exclusions:
                    names = e["removed"]
                    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                    console.print(
                        f"excluded {e['identities_removed']} identities "
                        f"({e['images_removed']} images) on list [bold]{e['list']}[/]"
                        + (f": {shown}" if names else ""),
                        highlight=False,
                    )
                mi = plan.min_images
                if mi["identities_removed"]:
                    console.print(
                        f"dropped {mi['identities_removed']} identities ({mi['images_removed']} "
                        f"images) with fewer than {mi['k']} images"
                    )
                if not plan.overlap.get("ran", True):
                    console.print(f"[yellow]warning:[/] {plan.overlap['reason']}")
                if len(plan.classes) < 2:
                    console.print(
                        f"[yellow]warning:[/] only {len(plan.classes)} identity is left: a "
                        "classifier over one class learns nothing (its softmax loss is 0)",
                        highlight=False,
                    )
                if plan.collisions:
                    console.print(
                        f"[yellow]warning:[/] {len(plan.collisions)} group(s) of identity names "
                        "fold to the same name and stay separate classes, e.g. "
                        f"{next(iter(plan.collisions.values()))}"
                    )

            result = run_pack(
                aligned,
                out,
                config,
                force=force,
                on_plan=on_plan,
                on_image=lambda n: bar.advance(task, n),
            )
        if result.up_to_date:
            console.print(f"[green]up to date[/]: {result.path} (use --force to rebuild)")
            summary = {"output": str(result.path), "up_to_date": True, **result.manifest.counts}
        else:
            s = result.summary
            st = s["class_stats"]
            resumed = f", resumed {s['resumed_shards']}" if s["resumed_shards"] else ""
            console.print(
                f"[green]packed[/] {s['images']} images of {s['classes']} identities "
                f"(train {s['train']}, val {s['val']}) into {s['shards']} shard(s){resumed} "
                f"-> {result.path}\nimages per identity: min {st['min']}, median "
                f"{st['median']:g}, max {st['max']}",
                highlight=False,
            )
            summary = {**s, "up_to_date": False}
        if json_out:
            emit_json(summary)
