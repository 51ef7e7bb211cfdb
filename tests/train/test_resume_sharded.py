"""Resuming from a sharded checkpoint (``checkpoints/last/``): the step from the index alone,
and a run on one process (world 1) reassembles every class row from the per-rank files and
ends with the weights of an uninterrupted run."""

from __future__ import annotations

import shutil

import pytest
import torch

from facecl.pack.dataset import ShardDataset
from facecl.train import sharded_checkpoint as sc
from facecl.train.checkpoint import load_checkpoint
from facecl.train.config import TrainConfig
from facecl.train.last import last_step, load_last
from facecl.train.loop import StopFlag, train
from facecl.train.stage import _checkpoint_step

CFG = dict(arch="tiny", steps=8, batch_size=8, workers=0, log_every=2, checkpoint_every=4)
CFG.update(lr=0.05, threads=1, loss="cl", lam=0.1)


def class_paths(ckpt: dict) -> list[tuple]:
    """The payload's class-row tensors (dim 0 = the 4 classes: no backbone tensor has 4)."""
    n = ckpt["num_classes"]
    paths: list[tuple] = []
    for part in ("head_state", "loss_state"):
        paths += [(part, k) for k, v in ckpt[part].items() if v.dim() and v.shape[0] == n]
    for i, entry in ckpt["optimizer"]["state"].items():
        buf = entry.get("momentum_buffer")
        if buf is not None and buf.shape[0] == n:
            paths.append(("optimizer", "state", i, "momentum_buffer"))
    return paths


def shard_last_pt(work, ranges) -> None:
    """``checkpoints/last.pt`` rewritten as the per-rank files a sharded run writes."""
    ckpt = dict(load_checkpoint(work / "checkpoints" / "last.pt"))
    shared, rows = sc.split_payload(ckpt, class_paths(ckpt))
    assert {"head_state/fc.weight", "loss_state/centers"} <= set(rows)
    per_rank = [sc.split_rows(rows, lo, hi) for lo, hi in ranges]
    meta = {"config": ckpt["config"]}
    sc.save_set(
        work / "checkpoints" / "last",
        step=ckpt["step"],
        ranges=ranges,
        rows=per_rank,
        shared=shared,
        meta=meta,
    )
    (work / "checkpoints" / "last.pt").unlink()


def stop_at(stop: StopFlag, step: int):
    def progress(done: int, record) -> None:
        if done == step:
            stop.requested = True

    return progress


@pytest.fixture(scope="module")
def reference(pack, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    train(TrainConfig(**CFG), ShardDataset(pack), run)
    return load_checkpoint(run / "model.pt")


@pytest.mark.parametrize("ranges", [[(0, 2), (2, 4)], [(0, 1), (1, 3), (3, 4)]])
def test_one_process_resumes_from_a_sharded_checkpoint(pack, tmp_path, reference, ranges):
    cfg, run, stop = TrainConfig(**CFG), tmp_path / "run", StopFlag()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, ShardDataset(pack), run, stop=stop, on_progress=stop_at(stop, 4))
    shard_last_pt(run, ranges)
    index_only = tmp_path / "index_only"  # the step comes from index.json alone
    (index_only / "checkpoints" / "last").mkdir(parents=True)
    shutil.copy(run / "checkpoints" / "last" / "index.json", index_only / "checkpoints" / "last")
    assert last_step(index_only) == _checkpoint_step(index_only) == 4 == last_step(run)
    summary = train(cfg, ShardDataset(pack), run)
    assert summary["resumed_from"] == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]
    got = load_checkpoint(run / "model.pt")
    for part in ("model", "head_state", "loss_state"):
        for key, value in reference[part].items():
            assert torch.equal(got[part][key], value), f"{part}.{key}"


def test_the_later_of_last_pt_and_a_sharded_checkpoint_wins(pack, tmp_path):
    cfg, run, stop = TrainConfig(**CFG), tmp_path / "run", StopFlag()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, ShardDataset(pack), run, stop=stop, on_progress=stop_at(stop, 4))
    old = load_checkpoint(run / "checkpoints" / "last.pt")
    shard_last_pt(run, [(0, 2), (2, 4)])  # step 4, sharded
    torch.save({**old, "step": 6}, run / "checkpoints" / "last.pt")  # a later last.pt
    assert last_step(run) == 6 and load_last(run)["step"] == 6
    torch.save({**old, "step": 3}, run / "checkpoints" / "last.pt")
    assert last_step(run) == 4 and load_last(run)["class_rows"] == [0, 4]


def test_a_corrupt_rank_file_stops_the_resume_with_one_line(pack, tmp_path, monkeypatch):
    """The CLI, resuming a run whose checkpoint is per rank: a flipped byte in one rank's
    file is a one-line error naming the file (exit 1), never a traceback or a fresh start."""
    from typer.testing import CliRunner

    from facecl.cli import app

    args = _interrupted_cli_run(pack, tmp_path, monkeypatch)
    run, partial = tmp_path / "run", tmp_path / "run.partial"
    bad = partial / "checkpoints" / "last" / "s000000004" / "rank-1-of-2.pt"
    data = bytearray(bad.read_bytes())
    data[len(data) // 3] ^= 0x40
    bad.write_bytes(bytes(data))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "rank-1-of-2.pt does not match the sha256 in its index" in r.output
    assert "Traceback" not in r.output and not run.exists()


def _interrupted_cli_run(pack, tmp_path, monkeypatch) -> list[str]:
    """``facecl train`` args of a run stopped at step 4, its checkpoint made per rank."""
    from typer.testing import CliRunner

    import facecl.train.stage as stage
    from facecl.cli import app

    real = stage.train

    def stop_at_4(cfg, dataset, work, **kw):
        kw["on_progress"] = stop_at(kw["stop"], 4)
        return real(cfg, dataset, work, **kw)

    args = ["train", str(pack), "-o", str(tmp_path / "run"), "--arch", "tiny", "--steps", "8"]
    args += ["--batch-size", "8", "--workers", "0", "--checkpoint-every", "4", "--no-progress"]
    monkeypatch.setattr(stage, "train", stop_at_4)
    assert CliRunner().invoke(app, args).exit_code == 130  # interrupted at step 4
    monkeypatch.setattr(stage, "train", real)
    shard_last_pt(tmp_path / "run.partial", [(0, 2), (2, 4)])
    return args


@pytest.mark.parametrize("ranges", [[[0, 2], [2, 5]], [[0, 1], [1, 3]]])
def test_an_index_of_another_class_count_is_one_line(pack, tmp_path, monkeypatch, ranges):
    """Per-rank files whose index.json names 5 (or 3) classes, resumed on the 4-class pack
    they came from (a hand-edited or mixed-up index): exit 1, one line naming both counts
    and the fix, no traceback and no fresh start."""
    import json

    from typer.testing import CliRunner

    from facecl.cli import app

    args = _interrupted_cli_run(pack, tmp_path, monkeypatch)
    where = tmp_path / "run.partial" / "checkpoints" / "last" / "index.json"
    index = json.loads(where.read_text())
    index.update(num_classes=ranges[-1][1], ranges=ranges)
    where.write_text(json.dumps(index))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert f"holds {ranges[-1][1]} classes" in r.output and "the pack has 4" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_a_last_pt_of_another_class_count_is_a_checkpoint_error(pack, tmp_path):
    """``train`` on a 5-class dataset in a run directory whose ``last.pt`` has 4 classes:
    a CheckpointError naming both counts (not a load_state_dict size mismatch)."""
    from facecl.errors import CheckpointError

    from .helpers import make_pack

    stop, run = StopFlag(), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**CFG), ShardDataset(pack), run, stop=stop, on_progress=stop_at(stop, 4))
    five = ShardDataset(make_pack(tmp_path / "five", classes=5))
    with pytest.raises(CheckpointError, match="last.pt holds 4 classes, the pack has 5"):
        train(TrainConfig(**CFG), five, run)


def test_a_missing_rank_file_stops_the_resume_with_one_line(pack, tmp_path, monkeypatch):
    """The CLI, resuming per-rank files of which one is gone: exit 1, one line naming the
    missing file and its index, no traceback and no fresh start."""
    from typer.testing import CliRunner

    from facecl.cli import app

    args = _interrupted_cli_run(pack, tmp_path, monkeypatch)
    (tmp_path / "run.partial" / "checkpoints" / "last" / "s000000004" / "rank-0-of-2.pt").unlink()
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "rank-0-of-2.pt is missing (named by" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_a_missing_rank_file_under_ddp_is_one_line(pack, tmp_path, monkeypatch):
    """``--ddp 2 --shard-classes`` resuming per-rank files without rank 1's: rank 1 fails
    (rank 0's own rows are there); the CLI says rank 1's one line, exit 1, no traceback."""
    from typer.testing import CliRunner

    from facecl.cli import app

    args = _interrupted_cli_run(pack, tmp_path, monkeypatch)
    (tmp_path / "run.partial" / "checkpoints" / "last" / "s000000004" / "rank-1-of-2.pt").unlink()
    r = CliRunner().invoke(app, [*args, "--ddp", "2", "--shard-classes"])
    assert r.exit_code == 1, r.output
    assert "rank-1-of-2.pt is missing (named by" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "run").exists()
