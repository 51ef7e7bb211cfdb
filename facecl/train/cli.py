"""``facecl train SHARDS -o RUN`` and ``facecl toy mnist``.

Every option defaults to None ("not given") and is merged over ``--config FILE`` and the
``TrainConfig`` defaults (``facecl.train.config``), the only home of the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

# Help texts only: the registries are the source of truth (checked at run time, and a test
# keeps these lists equal to them), imported lazily so `facecl --help` stays fast.
ARCH_HELP = "Backbone: sphere4, sphere10, sphere20, sphere36, sphere64, lenetpp, tiny."
HEAD_HELP = "Head: softmax, sphereface, cosface, arcface."
LOSS_HELP = "Center loss: none, cl, acl, acl-gamma, cil."

Opt = typer.Option


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        shards: Annotated[Path, typer.Argument(help="A 'facecl pack' output directory.")],
        out: Annotated[Path, Opt("--out", "-o", help="Run directory to write.")],
        config: Annotated[
            Path | None, Opt("--config", help="TOML/YAML file of TrainConfig keys.")
        ] = None,
        arch: Annotated[str | None, Opt(help=ARCH_HELP)] = None,
        head: Annotated[str | None, Opt(help=HEAD_HELP)] = None,
        loss: Annotated[str | None, Opt(help=LOSS_HELP)] = None,
        lam: Annotated[
            float | None, Opt("--lambda", help="Center-loss weight lambda [0.003].")
        ] = None,
        alpha: Annotated[float | None, Opt(help="Center learning rate alpha [0.5].")] = None,
        rho: Annotated[float | None, Opt(help="Generalized-center radius rho [0].")] = None,
        gamma: Annotated[float | None, Opt(help="CIL invariant-term weight [0.001].")] = None,
        feature_dim: Annotated[int | None, Opt(help="Feature dimension [arch default].")] = None,
        steps: Annotated[int | None, Opt(help="SGD iterations [28000].")] = None,
        batch_size: Annotated[int | None, Opt(help="Global mini-batch [256].")] = None,
        lr: Annotated[float | None, Opt(help="Initial learning rate [0.1].")] = None,
        momentum: Annotated[float | None, Opt(help="SGD momentum [0.9].")] = None,
        weight_decay: Annotated[float | None, Opt(help="Weight decay [5e-4].")] = None,
        seed: Annotated[int | None, Opt(help="Seed of init, data order, flips [0].")] = None,
        split: Annotated[str | None, Opt(help="Pack split: train or all [train].")] = None,
        sampler: Annotated[str | None, Opt(help="uniform or balanced [uniform].")] = None,
        flip: Annotated[bool | None, Opt("--flip/--no-flip", help="Random flips [on].")] = None,
        workers: Annotated[int | None, Opt(help="DataLoader workers [2].")] = None,
        device: Annotated[str | None, Opt(help="auto, cpu or cuda [auto].")] = None,
        threads: Annotated[int | None, Opt(help="CPU threads for torch [0 = default].")] = None,
        amp: Annotated[
            bool | None, Opt("--amp/--no-amp", help="Mixed precision on CUDA [on].")
        ] = None,
        checkpoint_every: Annotated[
            int | None, Opt(help="Steps between checkpoints [1000].")
        ] = None,
        log_every: Annotated[int | None, Opt(help="Steps between metric records [20].")] = None,
        ddp: Annotated[
            int, Opt(help="Spawn N local DDP processes (gloo on CPU, nccl on GPU).", min=0)
        ] = 0,
        resume: Annotated[
            bool, Opt("--resume/--no-resume", help="Continue an interrupted run [on].")
        ] = True,
        force: Annotated[bool, Opt("--force", help="Retrain over an existing run.")] = False,
        progress_bar: Annotated[
            bool, Opt("--progress/--no-progress", help="Show the progress bar.")
        ] = True,
        json_out: Annotated[bool, Opt("--json", help="Print a JSON summary.")] = False,
    ) -> None:
        """Train a backbone with a softmax or margin head plus a center-loss variant."""
        from facecl.console import console, emit_json
        from facecl.train.config import load_train_config
        from facecl.train.stage import run_train
        from facecl.train.state import validate_names

        overrides = {
            "arch": arch,
            "head": head,
            "loss": loss,
            "lam": lam,
            "alpha": alpha,
            "rho": rho,
            "gamma": gamma,
            "feature_dim": feature_dim,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "seed": seed,
            "split": split,
            "sampler": sampler,
            "flip": flip,
            "workers": workers,
            "device": device,
            "threads": threads,
            "amp": amp,
            "checkpoint_every": checkpoint_every,
            "log_every": log_every,
        }
        cfg = load_train_config(config, overrides)
        validate_names(cfg)
        result = run_train(
            shards, out, cfg, force=force, resume=resume, ddp=ddp, show_progress=progress_bar
        )
        if result.manifest is None:  # a non-zero torchrun rank
            return
        if result.up_to_date:
            console.print(f"[green]up to date[/]: {result.path} (use --force to retrain)")
            summary = {"output": str(result.path), "up_to_date": True, **result.manifest.counts}
        else:
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
            summary = {**s, "up_to_date": False}
        if json_out:
            emit_json(summary)

    toy = type(app)(help="Small reproducible experiments (MNIST 2-d features).")

    @toy.command("mnist")
    def toy_mnist(
        out: Annotated[Path, Opt("--out", "-o", help="Output directory.")],
        loss: Annotated[str | None, Opt(help=LOSS_HELP)] = None,
        head: Annotated[str | None, Opt(help=HEAD_HELP)] = None,
        rho: Annotated[float | None, Opt(help="Generalized-center radius rho [0].")] = None,
        lam: Annotated[float | None, Opt("--lambda", help="Center-loss weight [0.01].")] = None,
        alpha: Annotated[float | None, Opt(help="Center learning rate [0.5].")] = None,
        gamma: Annotated[float | None, Opt(help="CIL invariant-term weight [0.001].")] = None,
        steps: Annotated[int | None, Opt(help="SGD iterations [2000].")] = None,
        batch_size: Annotated[int | None, Opt(help="Mini-batch [32].")] = None,
        lr: Annotated[float | None, Opt(help="Initial learning rate [0.01].")] = None,
        seed: Annotated[int | None, Opt(help="Seed [0].")] = None,
        device: Annotated[str | None, Opt(help="auto, cpu or cuda [auto].")] = None,
        threads: Annotated[int | None, Opt(help="CPU threads for torch [0 = default].")] = None,
        imbalance: Annotated[
            bool, Opt("--imbalance", help="Wu 2018 Sec. 3.1: five classes cut to 200 samples.")
        ] = False,
        imbalance_keep: Annotated[int | None, Opt(help="Samples kept per cut class [200].")] = None,
        data: Annotated[
            Path | None, Opt(help="MNIST directory [../shared/data/mnist, else bundled].")
        ] = None,
        config: Annotated[
            Path | None, Opt("--config", help="TOML/YAML file of TrainConfig keys.")
        ] = None,
        force: Annotated[bool, Opt("--force", help="Rerun over an existing output.")] = False,
        progress_bar: Annotated[
            bool, Opt("--progress/--no-progress", help="Show the progress bar.")
        ] = True,
        json_out: Annotated[bool, Opt("--json", help="Print a JSON summary.")] = False,
    ) -> None:
        """Train LeNet++ (2-d features) on MNIST and plot train/test features with centers."""
        from facecl.console import console, emit_json
        from facecl.train.config import TOY_TRAIN_DEFAULTS, ToyConfig, load_train_config
        from facecl.train.state import validate_names
        from facecl.train.toy import run_toy

        overrides = {
            "loss": loss,
            "head": head,
            "rho": rho,
            "lam": lam,
            "alpha": alpha,
            "gamma": gamma,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "device": device,
            "threads": threads,
        }
        cfg = load_train_config(config, overrides, base=TOY_TRAIN_DEFAULTS)
        validate_names(cfg)
        toy_kw: dict[str, Any] = {"imbalance": imbalance, "data": str(data or "")}
        if imbalance_keep is not None:
            toy_kw["imbalance_keep"] = imbalance_keep
        toy_cfg = ToyConfig(**toy_kw)
        result = run_toy(cfg, toy_cfg, out, force=force, show_progress=progress_bar)
        s = result.summary
        if result.up_to_date:
            console.print(f"[green]up to date[/]: {result.path} (use --force to rerun)")
        else:
            console.print(
                f"[green]MNIST[/] {cfg.head}+{cfg.loss} (lambda {cfg.lam:g}, rho {cfg.center.rho:g}"
                f"{', imbalanced' if toy_cfg.imbalance else ''}): test accuracy "
                f"{100 * s['test_accuracy']:.2f}% -> {s['figure']}",
                highlight=False,
            )
        if json_out:
            emit_json({**s, "up_to_date": result.up_to_date})

    app.add_typer(toy, name="toy")
