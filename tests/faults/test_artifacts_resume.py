"""Resume (issue 13 item 10 and the fault-injection harness): each stage SIGKILLed at
several points in a real subprocess, then re-run with the same command, ends equal to an
uninterrupted run; runtime-only settings (train --workers/--threads) may change on resume;
a killed --force run resumes when the same forced command is run again."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from facecl.align.artifact import read_faces_file
from tests.faults.conftest import ALIGN_ARGS, PACK_ARGS, TRAIN_ARGS, ok
from tests.faults.helpers import facecl, kill_when, start

SLOW = {
    "align": ("facecl.align.inmemory:Aligner.align", 1.0),
    "pack": ("facecl.pack.stage:_write_shard", 1.0),
    "train": ("facecl.pack.dataset:ShardDataset.__getitem__", 0.05),
    "embed": ("facecl.embed.stage:_embed_batch", 0.5),
}
EMBED_ARGS = ("--device", "cpu", "--batch-size", "1", "--chunk-batches", "1")


def _files(art):
    return json.loads((art / "manifest.json").read_text())["extra"]["files"]


def _same_weights(a, b):
    ca = torch.load(a / "model.pt", weights_only=True)
    cb = torch.load(b / "model.pt", weights_only=True)
    for part in ("model", "head_state", "loss_state"):
        assert ca[part].keys() == cb[part].keys()
        for k, v in cb[part].items():
            assert torch.equal(ca[part][k], v), f"{part}.{k}"


def _same_embeddings(a, b):
    with h5py.File(a / "embeddings.h5") as fa, h5py.File(b / "embeddings.h5") as fb:
        assert np.array_equal(fa["embeddings"][:], fb["embeddings"][:], equal_nan=True)
        assert list(fa["keys"][:]) == list(fb["keys"][:])


def _steps_done(partial):
    """Steps logged, once a checkpoint exists (0 before: a kill then has nothing to keep)."""
    m = partial / "metrics.jsonl"
    if not m.is_file() or not (partial / "checkpoints" / "last.pt").is_file():
        return 0
    return len(m.read_text().splitlines())


def _kill_and_resume(stage, args, out, ready):
    """Start ``facecl STAGE ARGS`` slowed down, SIGKILL it when ``ready(partial)``, check
    it left only a .partial, then re-run the same command to the end."""
    partial = out.with_name(out.name + ".partial")
    proc = start(stage, *args, slow=SLOW[stage])
    kill_when(proc, lambda: ready(partial))
    assert proc.returncode == -9 and not out.exists() and partial.is_dir()
    assert not (partial / "manifest.json").exists()
    return ok(facecl(stage, *args, "--json"))


# ----------------------------------------------------------------------- the harness


def _parts(n):
    return lambda p: len(list((p / "_parts").glob("part-*.csv"))) >= n


def _shards(n):
    def ready(p):
        f = p / "_pack_progress.json"
        try:
            return len(json.loads(f.read_text())["shards"]) >= n
        except (OSError, ValueError, KeyError):
            return False

    return ready


def _chunks(n):
    return lambda p: len(list((p / "chunks").glob("*.npz"))) >= n


def _state(p):
    return (p / "_facecl_partial.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "point", "ready"),
    [
        ("align", "before any chunk", _state),
        ("align", "after chunk 1 of 3", _parts(1)),
        ("align", "after chunk 2 of 3", _parts(2)),
        ("pack", "before any shard", _state),
        ("pack", "after shard 1 of 3", _shards(1)),
        ("pack", "after shard 2 of 3", _shards(2)),
        ("train", "after step 1 of 6", lambda p: _steps_done(p) >= 1),
        ("train", "after step 4 of 6", lambda p: _steps_done(p) >= 4),
        ("embed", "after chunk 1 of 6", _chunks(1)),
        ("embed", "after chunk 4 of 6", _chunks(4)),
    ],
)
def test_killed_stage_resumes_to_the_uninterrupted_result(pipeline, tmp_path, stage, point, ready):
    """A34-A43: SIGKILL at several points of every stage; the resumed result is equal."""
    out = tmp_path / "out"
    if stage == "align":
        _kill_and_resume(
            stage, [pipeline.src, "-o", out, *ALIGN_ARGS, "--batch-size", "2"], out, ready
        )
        assert _files(out) == _files(pipeline.align)
    elif stage == "pack":
        _kill_and_resume(stage, [pipeline.align, "-o", out, *PACK_ARGS], out, ready)
        assert _files(out) == _files(pipeline.pack)
    elif stage == "train":
        r = _kill_and_resume(stage, [pipeline.pack, "-o", out, *TRAIN_ARGS], out, ready)
        assert json.loads(r.stdout)["resumed_from"] >= 1
        _same_weights(out, pipeline.run)
    else:
        ref = tmp_path / "ref"
        ok(facecl("embed", pipeline.run, pipeline.align, "-o", ref, *EMBED_ARGS))
        r = _kill_and_resume(
            stage, [pipeline.run, pipeline.align, "-o", out, *EMBED_ARGS], out, ready
        )
        assert json.loads(r.stdout)["resumed_from"] >= 1
        _same_embeddings(out, ref)


# ----------------------------------------------------------------------- fast cases


def test_train_resumes_with_other_runtime_settings(pipeline, tmp_path):
    """A44: killed with --workers 0, resumed with --workers 2: the checkpoint is kept
    (runtime settings are not in the fingerprint) and the weights equal the uninterrupted
    run's. (Another --threads resumes too, but may change the last bits of float sums.)"""
    out = tmp_path / "R"
    partial = tmp_path / "R.partial"
    proc = start("train", pipeline.pack, "-o", out, *TRAIN_ARGS, slow=SLOW["train"])
    kill_when(proc, lambda: _steps_done(partial) >= 3)
    kept = torch.load(partial / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 2 <= kept < 6  # the metrics line of a step is written before its checkpoint
    other = [*TRAIN_ARGS, "--workers", "2"]  # the last of an option wins
    assert TRAIN_ARGS[TRAIN_ARGS.index("--workers") + 1] == "0"
    r = ok(facecl("train", pipeline.pack, "-o", out, *other, "--json"))
    assert json.loads(r.stdout)["resumed_from"] == kept
    _same_weights(out, pipeline.run)
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["workers"] == 2  # recorded as run, just not fingerprinted
    assert (
        m["fingerprint"] == json.loads((pipeline.run / "manifest.json").read_text())["fingerprint"]
    )


def test_killed_force_run_resumes_with_the_same_forced_command(pipeline, tmp_path):
    """A45: `pack --force` over an existing pack, killed after a shard, re-run with the same
    --force: it resumes (the .partial records the forced start) instead of starting over."""
    out = tmp_path / "P"
    ok(facecl("pack", pipeline.align, "-o", out, "--shard-size", "3"))  # another config
    args = [pipeline.align, "-o", out, *PACK_ARGS, "--force"]
    proc = start("pack", *args, slow=SLOW["pack"])
    kill_when(proc, lambda: _shards(1)(tmp_path / "P.partial"))
    assert json.loads((tmp_path / "P.partial" / "_facecl_partial.json").read_text())["forced"]
    r = ok(facecl("pack", *args, "--json"))
    assert json.loads(r.stdout)["resumed_shards"] >= 1
    assert _files(out) == _files(pipeline.pack)


def test_align_redoes_a_finished_chunk_whose_crop_is_missing(pipeline, tmp_path):
    """A54: killed after a chunk, one of that chunk's crops deleted from the .partial: the
    resume redoes that chunk (and says so) instead of a FileNotFoundError at the hashes."""
    out = tmp_path / "A"
    partial = tmp_path / "A.partial"
    args = [pipeline.src, "-o", out, *ALIGN_ARGS, "--batch-size", "2"]
    proc = start("align", *args, slow=SLOW["align"])
    kill_when(proc, lambda: _parts(1)(partial))
    # a crop of a FINISHED chunk (its part file lists it): with writer threads, crops of the
    # next chunk may already be on disk, and that chunk is redone anyway
    part = sorted((partial / "_parts").glob("part-*.csv"))[0]
    crop = partial / next(r.output for r in read_faces_file(part) if r.output)
    crop.unlink()
    r = ok(facecl("align", *args))
    assert "redoing chunk" in r.stderr and "crops are missing" in r.stderr
    assert _files(out) == _files(pipeline.align)
