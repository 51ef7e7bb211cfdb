"""`facecl train` as a stage: a pack artifact in, a run artifact out (atomic, resumable).

The run layout (model.pt, checkpoints/last.pt, metrics.jsonl, ...) is ``facecl.train.run``'s,
the only home of its file names (see also docs/architecture.md ``### train``); the manifest's
``config`` is the ``TrainConfig`` and its inputs the pack artifact.

A killed run leaves ``RUN.partial/``; re-running the same command resumes from
``checkpoints/last.pt`` (CPU: bit-identical to an uninterrupted run). ``--ddp N`` spawns N
processes here; under ``torchrun`` every process runs this and rank 0 writes the artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facecl.artifacts import (
    Manifest,
    StageOutput,
    atomic_write_json,
    config_dict,
    input_ref,
    read_manifest,
    sha256_file,
)
from facecl.errors import FaceclError, UsageError
from facecl.pack.artifact import CLASSES as PACK_CLASSES
from facecl.train import distributed as ddp_util
from facecl.train.config import TrainConfig, config_from_dict
from facecl.train.loop import StopFlag, resolve_device, train
from facecl.train.metrics import read_metrics
from facecl.train.run import (
    CHECKPOINTS,
    CLASSES,
    CURVE,
    LAST_REL,
    LAST_SHARDED_REL,
    METRICS,
    MODEL,
    SUMMARY,
)
from facecl.train.shard_classes import check_shard_classes
from facecl.train.state import validate_names

ProgressFn = Callable[[int, dict[str, Any] | None], None]


@dataclass
class TrainResult:
    path: Path
    manifest: Manifest | None
    up_to_date: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- progress


@contextlib.contextmanager
def train_progress(cfg: TrainConfig, enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A rich progress bar counting images (so its rate is images/s) with the loss terms."""
    if not enabled:
        yield None
        return
    from facecl.console import progress

    with progress() as bar:
        task = bar.add_task("train", total=cfg.steps * cfg.batch_size, unit="img")
        first = [True]

        def update(done: int, record: dict[str, Any] | None) -> None:
            if first[0]:
                bar.update(task, completed=(done - 1) * cfg.batch_size)
                first[0] = False
            bar.advance(task, cfg.batch_size)
            if record is not None:
                text = f"step {done}/{cfg.steps} loss {record['loss']:.3f}"
                text += f" (ce {record['softmax']:.3f}"
                if cfg.loss != "none":
                    text += f" + {cfg.lam:g}*{record.get('center', 0.0):.2f}"
                if "invariant" in record:
                    text += f" + inv {record['invariant']:.3f}"
                bar.update(task, description=text + ")")

        yield update


@contextlib.contextmanager
def stop_on_signals(stop: StopFlag) -> Iterator[None]:
    """SIGINT/SIGTERM ask the loop to stop after the current step (and checkpoint); a second
    SIGINT interrupts at once. Only in the main thread (elsewhere: no handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.requested = True
        from facecl.console import console

        console.print("[yellow]stopping after this step[/] (checkpointing; Ctrl-C again to abort)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- dispatch


def _spawn_worker(
    rank: int,
    world: int,
    init_file: str,
    cfg_dict: dict[str, Any],
    dataset: Any,
    work: str,
    arch_kwargs: dict[str, Any] | None,
    info: dict[str, Any],
    show_progress: bool,
) -> None:
    """One ``--ddp N`` rank. A ``FaceclError`` is recorded beside the rendezvous file for
    the parent to raise as one line (``mp.spawn`` would hand it a traceback text)."""
    cfg = config_from_dict(cfg_dict)
    torch.set_num_threads(ddp_util.threads_per_rank(world))
    device = ddp_util.rank_device(resolve_device(cfg.device), rank)
    ddp_util.init_group(device, rank, world, f"file://{init_file}")
    try:
        with train_progress(cfg, show_progress and rank == 0) as cb:
            summary = train(
                cfg,
                dataset,
                work,
                arch_kwargs=arch_kwargs,
                device=device,
                rank=rank,
                world=world,
                info=info,
                on_progress=cb,
            )
        if rank == 0:
            atomic_write_json(Path(work) / SUMMARY, summary)
    except FaceclError as e:
        ddp_util.record_rank_error(Path(init_file).parent, rank, e)
        raise SystemExit(1) from None
    finally:
        ddp_util.shutdown()


def fit(
    cfg: TrainConfig,
    dataset: Any,
    work: str | os.PathLike,
    *,
    ddp: int = 0,
    arch_kwargs: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    show_progress: bool = True,
    stop: StopFlag | None = None,
) -> dict[str, Any]:
    """Train in ``work`` with one process, ``ddp`` spawned processes, or the torchrun group
    this process belongs to. Returns the run summary (rank 0's)."""
    work = Path(work)
    info = dict(info or {})
    env = ddp_util.torchrun_env()
    if ddp > 1 and env is not None:
        raise UsageError("--ddp N inside torchrun", "use one of them: torchrun sets the ranks")
    world = env.world if env is not None else ddp
    check_shard_classes(cfg, world, int(getattr(dataset, "num_classes", world)))
    if ddp > 1:
        import torch.multiprocessing as mp

        ddp_util.check_ddp(ddp, cfg.batch_size, resolve_device(cfg.device))

        with tempfile.TemporaryDirectory(prefix="facecl-ddp-") as tmp:
            try:
                mp.spawn(
                    _spawn_worker,
                    args=(
                        ddp,
                        str(Path(tmp) / "init"),
                        config_dict(cfg),
                        dataset,
                        str(work),
                        arch_kwargs,
                        info,
                        show_progress,
                    ),
                    nprocs=ddp,
                    join=True,
                )
            except (mp.ProcessRaisedException, mp.ProcessExitedException):
                ddp_util.raise_rank_error(Path(tmp), ddp)  # a rank's FaceclError, one line
                raise
        return json.loads((work / SUMMARY).read_text())
    if env is not None:  # already inside the group (initialised by run_train)
        device = ddp_util.rank_device(resolve_device(cfg.device), env.local_rank)
        with train_progress(cfg, show_progress and env.rank == 0) as cb:
            return train(
                cfg,
                dataset,
                work,
                arch_kwargs=arch_kwargs,
                device=device,
                rank=env.rank,
                world=env.world,
                info=info,
                on_progress=cb,
            )
    with train_progress(cfg, show_progress) as cb:
        return train(
            cfg, dataset, work, arch_kwargs=arch_kwargs, info=info, on_progress=cb, stop=stop
        )


def finalize(work: Path, cfg: TrainConfig, summary: dict[str, Any], title: str = "") -> dict:
    """Write the curve and summary; return ``extra`` for the manifest (file hashes etc.)."""
    from facecl.train.plots import training_curve

    records = read_metrics(work / METRICS)
    if records:
        training_curve(records, work / CURVE, title=title)
    atomic_write_json(work / SUMMARY, summary)
    files = {}
    from facecl.train.sharded_checkpoint import INDEX

    index = f"{LAST_SHARDED_REL}/{INDEX}"  # it holds the sha256 of every per-rank file
    for rel in (MODEL, LAST_REL, index, METRICS, CURVE, SUMMARY, CLASSES):
        if (work / rel).is_file():
            files[rel] = sha256_file(work / rel)
    return {
        "files": files,
        "model": MODEL,
        "images_per_s": summary.get("images_per_s"),
        "loader_wait_share": summary.get("loader_wait_share"),
        "final": summary.get("final"),
        "world": summary.get("world", 1),
        "device": summary.get("device"),
    }


# --------------------------------------------------------------------------- the stage


def _pack_dataset(shards: Path, cfg: TrainConfig) -> Any:
    from facecl.pack.dataset import ShardDataset

    # Flips are drawn in the loop from (seed, step), not in the dataset; an unknown augment
    # name fails here, before anything is written, listing the close match.
    transform = list(cfg.augment) if cfg.augment else None
    dataset = ShardDataset(shards, split=cfg.split, flip=False, transform=transform)
    if int(dataset.num_classes) < 2:
        from facecl.console import console

        console.print(
            f"[yellow]warning:[/] {shards} has {dataset.num_classes} class: the softmax loss "
            "of one class is 0, so the backbone learns from the center term alone",
            highlight=False,
        )
    return dataset


def _begin(shards: Path, out: str | os.PathLike, cfg: TrainConfig, force: bool, resume: bool):
    read_manifest(shards, stage="pack")
    so = StageOutput(out, "train", cfg, [input_ref(shards)], force=force, resume=resume)
    if so.up_to_date:
        return so, None
    validate_names(cfg)
    work = so.begin()
    if not so.resumed:
        shutil.rmtree(work / CHECKPOINTS, ignore_errors=True)
    shutil.copyfile(shards / PACK_CLASSES, work / CLASSES)
    return so, work


def run_train(
    shards: str | os.PathLike,
    out: str | os.PathLike,
    cfg: TrainConfig,
    *,
    force: bool = False,
    resume: bool = True,
    ddp: int = 0,
    show_progress: bool = True,
) -> TrainResult:
    """Train on a pack artifact into the run artifact ``out`` (see the module docstring)."""
    shards = Path(shards).resolve()
    env = ddp_util.torchrun_env()
    if env is not None:
        if ddp > 1:
            raise UsageError("--ddp N inside torchrun", "use one of them: torchrun sets the ranks")
        ddp_util.check_ddp(env.world, cfg.batch_size, torch.device("cpu"))  # GPUs: torchrun's
        check_shard_classes(cfg, env.world)
        return _run_train_torchrun(shards, out, cfg, env, force, resume, show_progress)
    ddp_util.check_ddp(ddp, cfg.batch_size, resolve_device(cfg.device))  # before RUN.partial
    check_shard_classes(cfg, ddp)
    so, work = _begin(shards, out, cfg, force, resume)
    if work is None:
        return TrainResult(so.path, so.existing, up_to_date=True)
    info = {"classes_sha256": sha256_file(shards / PACK_CLASSES), "pack": str(shards)}
    resumed_from = _checkpoint_step(work)
    if ddp > 1:
        dataset = _pack_dataset(shards, cfg)
        summary = fit(cfg, dataset, work, ddp=ddp, info=info, show_progress=show_progress)
    else:
        dataset = _pack_dataset(shards, cfg)
        stop = StopFlag()
        with stop_on_signals(stop):
            summary = fit(cfg, dataset, work, info=info, show_progress=show_progress, stop=stop)
    return _commit(so, work, cfg, summary, dataset, resumed_from)


def _checkpoint_step(work: Path) -> int:
    from facecl.train.last import last_step

    return last_step(work)  # a sharded checkpoint's from its index.json alone


def _commit(
    so: StageOutput, work: Path, cfg: TrainConfig, summary: dict, dataset: Any, resumed_from: int
) -> TrainResult:
    title = f"{cfg.arch} | {cfg.head} + {cfg.loss} (lambda {cfg.lam:g}, rho {cfg.center.rho:g})"
    summary = {**summary, "resumed_from": resumed_from}
    extra = finalize(work, cfg, summary, title)
    counts = {
        "processed": cfg.steps * cfg.batch_size,
        "written": 1,
        "skipped": {},
        "steps": cfg.steps,
        "train_images": len(dataset),
        "classes": int(dataset.num_classes),
    }
    manifest = so.commit(counts, extra)
    out = {
        "output": str(so.path),
        "steps": cfg.steps,
        "resumed_from": resumed_from,
        "images_per_s": summary.get("images_per_s"),
        "loader_wait_share": summary.get("loader_wait_share"),
        "final": summary.get("final"),
        "world": summary.get("world", 1),
        "device": summary.get("device"),
        "model": str(so.path / MODEL),
    }
    return TrainResult(so.path, manifest, summary=out)


def _run_train_torchrun(
    shards: Path,
    out: str | os.PathLike,
    cfg: TrainConfig,
    env: ddp_util.RankInfo,
    force: bool,
    resume: bool,
    show_progress: bool,
) -> TrainResult:
    import torch.distributed as dist

    device = ddp_util.rank_device(resolve_device(cfg.device), env.local_rank)
    ddp_util.init_group(device, env.rank, env.world)
    try:
        decision: list[Any] = [None]
        so = work = None
        if env.rank == 0:
            try:
                so, work = _begin(shards, out, cfg, force, resume)
                decision[0] = "done" if work is None else str(work)
            except Exception as e:  # noqa: BLE001 - tell the other ranks, then re-raise
                decision[0] = f"error:{e}"
                dist.broadcast_object_list(decision, src=0)
                raise
        dist.broadcast_object_list(decision, src=0)
        if decision[0] == "done":
            path = Path(out).resolve()
            # only rank 0 reports (prints "up to date", the JSON): the others return no manifest
            manifest = read_manifest(path) if env.rank == 0 else None
            return TrainResult(path, manifest, up_to_date=True)
        if str(decision[0]).startswith("error:"):
            raise FaceclError(f"rank 0 failed: {decision[0][6:]}", "see rank 0's message")
        work_path = Path(decision[0])
        info = {"classes_sha256": sha256_file(shards / PACK_CLASSES), "pack": str(shards)}
        resumed_from = _checkpoint_step(work_path)
        dataset = _pack_dataset(shards, cfg)
        summary = fit(cfg, dataset, work_path, info=info, show_progress=show_progress)
        dist.barrier()
        if env.rank == 0:
            assert so is not None
            return _commit(so, work_path, cfg, summary, dataset, resumed_from)
        return TrainResult(Path(out).resolve(), None, summary={"rank": env.rank})
    finally:
        ddp_util.shutdown()
