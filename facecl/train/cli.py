"""``facecl train SHARDS -o RUN`` and ``facecl toy mnist``.

The options are generated from ``TrainConfig`` (and ``ToyConfig``) by ``facecl.cliconfig``:
the dataclasses in ``facecl.train.config`` are the only home of the defaults, choices and
help. Options given on the command line are merged over ``--config FILE`` and the defaults.
Backbone, head and loss names are checked against their registries when the run starts (an
unknown name lists the registered ones), so registering a variant needs no CLI change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facecl.cliconfig import Given, Options, config_command
from facecl.train.config import (
    TOY_PRESETS,
    TOY_TRAIN_DEFAULTS,
    TRAIN_PRESETS,
    ToyConfig,
    TrainConfig,
)

Opt = typer.Option

# What `facecl toy mnist` exposes of TrainConfig (the rest is fixed by the toy's defaults).
TOY_TRAIN_FIELDS = (
    "head", "loss", "lam", "center", "margin", "steps", "batch_size", "lr", "seed", "device",
    "threads", "head_bias",
)  # fmt: skip


@config_command(cfg=Options(TrainConfig, panel="Training (TrainConfig)"))
def train_cmd(
    shards: Annotated[Path, typer.Argument(help="A 'facecl pack' output directory.")],
    out: Annotated[Path, Opt("--out", "-o", help="Run directory to write.")],
    *,
    config: Annotated[
        Path | None, Opt("--config", help="TOML/YAML/JSON file of TrainConfig keys.")
    ] = None,
    cfg: Given,
    preset: Annotated[
        str | None,
        Opt(help=f"Paper schedule under the file and options: {', '.join(TRAIN_PRESETS)}."),
    ] = None,
    ddp: Annotated[
        int, Opt(help="Spawn N local DDP processes (gloo on CPU, nccl on GPU).", min=0)
    ] = 0,
    resume: Annotated[
        bool, Opt("--resume/--no-resume", help="Continue an interrupted run.")
    ] = True,
    force: Annotated[bool, Opt("--force", help="Retrain over an existing run.")] = False,
    progress_bar: Annotated[
        bool, Opt("--progress/--no-progress", help="Show the progress bar.")
    ] = True,
    json_out: Annotated[bool, Opt("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Train a backbone with a softmax or margin head plus a center-loss variant."""
    from facecl.console import emit_json
    from facecl.train.config import load_train_config, preset_layer
    from facecl.train.stage import run_train
    from facecl.train.state import validate_names

    config_ = load_train_config(config, cfg, base=preset_layer(preset, TRAIN_PRESETS))
    validate_names(config_)
    result = run_train(
        shards, out, config_, force=force, resume=resume, ddp=ddp, show_progress=progress_bar
    )
    if result.manifest is None:  # a non-zero torchrun rank
        return
    summary = _report_train(result, config_)
    if json_out:
        emit_json(summary)


@config_command(
    cfg=Options(
        TrainConfig,
        only=TOY_TRAIN_FIELDS,
        defaults=TOY_TRAIN_DEFAULTS,
        panel="Training (TrainConfig)",
    ),
    toy_cfg=Options(ToyConfig, panel="Toy (ToyConfig)"),
)
def toy_mnist(
    out: Annotated[Path, Opt("--out", "-o", help="Output directory.")],
    *,
    config: Annotated[
        Path | None, Opt("--config", help="TOML/YAML/JSON file of TrainConfig keys.")
    ] = None,
    cfg: Given,
    toy_cfg: Given,
    preset: Annotated[
        str | None,
        Opt(help=f"A paper's set-up under the file and options: {', '.join(TOY_PRESETS)}."),
    ] = None,
    force: Annotated[bool, Opt("--force", help="Rerun over an existing output.")] = False,
    progress_bar: Annotated[
        bool, Opt("--progress/--no-progress", help="Show the progress bar.")
    ] = True,
    json_out: Annotated[bool, Opt("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Train LeNet++ (2-d features) on MNIST and plot train/test features with centers."""
    from facecl.cliconfig import build
    from facecl.console import console, emit_json
    from facecl.train.config import load_train_config, preset_layer
    from facecl.train.state import validate_names
    from facecl.train.toy import run_toy

    layers: tuple[dict[str, Any], dict[str, Any]] = preset_layer(
        preset, TOY_PRESETS, "toy preset"
    ) or ({}, {})
    train_layer, toy_layer = layers
    config_ = load_train_config(config, cfg, base={**TOY_TRAIN_DEFAULTS, **train_layer})
    validate_names(config_)
    toy_config = build(ToyConfig, {**toy_layer, **toy_cfg})
    result = run_toy(config_, toy_config, out, force=force, show_progress=progress_bar)
    s = result.summary
    if result.up_to_date:
        console.print(f"[green]up to date[/]: {result.path} (use --force to rerun)")
    else:
        imbalanced = ", imbalanced" if toy_config.imbalance else ""
        console.print(
            f"[green]MNIST[/] {config_.head}+{config_.loss} (lambda {config_.lam:g}, "
            f"rho {config_.center.rho:g}{imbalanced}): test accuracy "
            f"{100 * s['test_accuracy']:.2f}% -> {s['figure']}",
            highlight=False,
        )
    if json_out:
        emit_json({**s, "up_to_date": result.up_to_date})


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    toy = type(app)(help="Small reproducible experiments (MNIST 2-d features).")
    toy.command("mnist")(toy_mnist)
    app.add_typer(toy, name="toy")


def _report_train(result: Any, cfg: TrainConfig) -> dict[str, Any]:
    """Print the one-line outcome of a train run; return its JSON summary."""
    from facecl.console import console

    if result.up_to_date:
        console.print(f"[green]up to date[/]: {result.path} (use --force to retrain)")
        return {"output": str(result.path), "up_to_date": True, **result.manifest.counts}
    s = result.summary
    final = s.get("final") or {}
    resumed = f" (resumed at step {s['resumed_from']})" if s["resumed_from"] else ""
    console.print(
        f"[green]trained[/] {cfg.arch} {cfg.head}+{cfg.loss} for {s['steps']} steps"
        f"{resumed}: loss {final.get('loss', float('nan')):.4f}, "
        f"{s['images_per_s']:.1f} img/s, loader wait "
        f"{100 * s['loader_wait_share']:.0f}% -> {result.path}",
        highlight=False,
    )
    return {**s, "up_to_date": False}
