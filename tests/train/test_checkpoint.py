"""Checkpoint version 2: the input spec travels with the model; version 1 files still load."""

from __future__ import annotations

import pytest
import torch

from facecl.embed.backends import resolve_model
from facecl.errors import ConfigError
from facecl.models.input_spec import InputSpec
from facecl.pack.dataset import ShardDataset
from facecl.train.checkpoint import VERSION, checkpoint_input_spec, load_checkpoint
from facecl.train.config import load_train_config
from facecl.train.loop import train
from facecl.train.run import resolve_checkpoint
from facecl.train.state import build_state, checkpoint_payload, restore
from facecl.train.toy import load_run

from .helpers import make_pack

TINY = {"arch": "tiny", "steps": 2, "batch_size": 8, "workers": 0, "log_every": 1, "lr": 0.05}


def _flat_v1(ckpt: dict) -> dict:
    """``ckpt`` as version 1 wrote it: no input_spec, a flat config (alpha, rho, gamma)."""
    old = {k: v for k, v in ckpt.items() if k != "input_spec"}
    config = {k: v for k, v in ckpt["config"].items() if k not in ("center", "margin")}
    config.update({k: ckpt["config"]["center"][k] for k in ("alpha", "rho", "gamma")})
    return {**old, "version": 1, "config": config}


def test_model_records_the_pack_geometry_and_v1_still_resolves(tmp_path):
    pack = make_pack(tmp_path, size=(112, 96))  # the 112x96 align template's crops
    run = tmp_path / "run"
    cfg = load_train_config(None, {**TINY, "loss": "cl", "rho": 0.5})
    train(cfg, ShardDataset(pack), run)
    ckpt = load_checkpoint(run / "model.pt")
    assert ckpt["version"] == VERSION == 2
    want = InputSpec.for_template("112x96")
    assert ckpt["input_spec"] == want.to_dict() and want.landmarks  # the template's 5 points
    assert checkpoint_input_spec(ckpt) == want
    assert load_checkpoint(run / "checkpoints" / "last.pt")["input_spec"] == want.to_dict()

    v1 = tmp_path / "v1.pt"
    torch.save(_flat_v1(ckpt), v1)
    old = load_checkpoint(v1)
    assert "input_spec" not in old and old["version"] == 1
    assert checkpoint_input_spec(old) == want
    assert resolve_model(v1).path == resolve_checkpoint(v1).checkpoint == v1.resolve()
    _, _, center, _ = load_run(v1)  # the flat config still rebuilds the center loss
    assert center.config == cfg.center
    assert torch.equal(center.centers, ckpt["loss_state"]["centers"])


def test_dataset_input_spec_wins(pack, tmp_path, monkeypatch):
    spec = InputSpec(size=(24, 20), template="", color="RGB", mean=100.0, scale=64.0)
    monkeypatch.setattr(ShardDataset, "input_spec", property(lambda self: spec))  # the pack's
    ds = ShardDataset(pack)
    train(load_train_config(None, TINY), ds, tmp_path / "run")
    assert checkpoint_input_spec(load_checkpoint(tmp_path / "run" / "model.pt")) == spec


def test_resume_accepts_an_old_flat_config_and_refuses_another(tmp_path):
    cfg = load_train_config(None, {**TINY, "loss": "cl", "rho": 0.5})
    kw = {"input_size": [16, 16], "feature_dim": 4}
    state = build_state(cfg, 3, kw, torch.device("cpu"))
    ckpt = checkpoint_payload(state, cfg, step=1, with_optimizer=True, info={})
    fresh = build_state(cfg, 3, kw, torch.device("cpu"))
    assert restore(fresh, _flat_v1(ckpt), cfg) == 1
    other = load_train_config(None, {**TINY, "loss": "cl", "rho": 0.25})
    with pytest.raises(ConfigError, match="another config"):
        restore(build_state(other, 3, kw, torch.device("cpu")), ckpt, other)


def test_cil_run_carries_the_pack_counts_and_old_cil_checkpoints_are_refused(tmp_path):
    """CIL's N_j (Wu's num_data) come from the pack's classes.json into the loss state and the
    checkpoints; a CIL checkpoint written before (no class_counts) fails in one line."""
    from facecl.errors import CheckpointError
    from facecl.pack.artifact import read_classes

    pack = make_pack(tmp_path, classes=3, per_class=5)
    run = tmp_path / "run"
    cfg = load_train_config(None, {**TINY, "loss": "cil"})
    ds = ShardDataset(pack)
    want = [c.train for c in read_classes(pack)]
    assert ds.class_counts.tolist() == want == [5, 5, 5]
    train(cfg, ds, run)
    for rel in ("model.pt", "checkpoints/last.pt"):
        assert load_checkpoint(run / rel)["loss_state"]["class_counts"].tolist() == want
    _, _, center, _ = load_run(run / "model.pt")
    assert center.class_counts.tolist() == want

    old = load_checkpoint(run / "checkpoints" / "last.pt")
    del old["loss_state"]["class_counts"]
    torch.save(old, tmp_path / "old.pt")
    state = build_state(cfg, 3, old["arch_kwargs"], torch.device("cpu"), class_counts=want)
    for attempt in (lambda: restore(state, old, cfg), lambda: load_run(tmp_path / "old.pt")):
        with pytest.raises(CheckpointError, match="no class_counts") as e:
            attempt()
        assert "\n" not in str(e.value) and "--force" in str(e.value)


def test_pack_counts_that_disagree_with_the_shards_are_an_integrity_error(tmp_path):
    import json

    from facecl.errors import IntegrityError

    pack = make_pack(tmp_path, classes=3, per_class=4)
    doc = json.loads((pack / "classes.json").read_text())
    doc["classes"]["id001"]["train"] = 9
    (pack / "classes.json").write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="label 1 has 9 train images listed but 4"):
        ShardDataset(pack)
