"""The study harness: config parsing, identity lists, and (slow) the whole chain on the sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.errors import ConfigError
from facecl.study.config import cli_args, load_study_config
from facecl.study.results import render_markdown
from facecl.study.runner import read_pair_identities, write_identity_lists

ROOT = Path(__file__).resolve().parents[2]


def _view1_pairs(src: Path, dst: Path) -> None:
    """The sample's View 2 pairs rewritten with a View 1 header (one count per kind)."""
    lines = [ln for ln in src.read_text().splitlines()[1:] if ln.strip()]
    matched = [ln for ln in lines if len(ln.split()) == 3]
    mismatched = [ln for ln in lines if len(ln.split()) == 4]
    assert len(matched) == len(mismatched)
    dst.write_text(f"{len(matched)}\n" + "\n".join(matched + mismatched) + "\n")


def _config(tmp_path: Path, lfw_mini: Path, extra: str = "") -> Path:
    _view1_pairs(lfw_mini / "pairs.txt", tmp_path / "pairsDevTest.txt")
    _view1_pairs(lfw_mini / "pairs.txt", tmp_path / "pairsDevTrain.txt")
    cfg = tmp_path / "study.toml"
    cfg.write_text(
        f"""
name = "mini"
seeds = [0]
[data]
lfw_root = "{lfw_mini / "lfw_original_150px"}"
train_people = "{lfw_mini / "people_train.txt"}"
test_pairs = "pairsDevTest.txt"
[align]
on_miss = "center"
[train]
arch = "tiny"
steps = 4
batch_size = 16
[[variants]]
name = "softmax"
loss = "none"
[[variants]]
name = "cl-rho5"
loss = "cl"
rho = 5
{extra}
"""
    )
    return cfg


def test_config_resolves_paths_and_variants(tmp_path, lfw_mini):
    cfg = load_study_config(_config(tmp_path, lfw_mini))
    assert cfg.test_pairs == (tmp_path / "pairsDevTest.txt").resolve()
    assert cfg.train_pairs == tmp_path.resolve() / "pairsDevTrain.txt"
    assert [v.name for v in cfg.variants] == ["softmax", "cl-rho5"]
    assert cfg.variants[1].train == {"loss": "cl", "rho": 5}
    assert cfg.seeds == (0,)


def test_config_unknown_key_suggests_the_closest(tmp_path, lfw_mini):
    path = _config(tmp_path, lfw_mini)
    path.write_text(path.read_text().replace("seeds =", "sedes ="))
    with pytest.raises(ConfigError, match="did you mean 'seeds'"):
        load_study_config(path)


def test_config_duplicate_variant_is_refused(tmp_path, lfw_mini):
    path = _config(tmp_path, lfw_mini, extra='[[variants]]\nname = "softmax"\nloss = "cl"\n')
    with pytest.raises(ConfigError, match="appears twice"):
        load_study_config(path)


def test_cli_args_maps_options_to_flags():
    assert cli_args(
        {"min_images": 5, "flip": True, "amp": False, "exclude": ["a", "b"], "lambda": 0.003}
    ) == ["--min-images", "5", "--flip", "--exclude", "a", "--exclude", "b", "--lambda", "0.003"]


def test_identity_lists_exclude_everyone_outside_devtrain(tmp_path, lfw_mini):
    cfg = load_study_config(_config(tmp_path, lfw_mini))
    report = write_identity_lists(cfg, tmp_path / "lists")
    not_train = (tmp_path / "lists" / "not_devtrain.txt").read_text().split()
    train = [ln.split()[0] for ln in (lfw_mini / "people_train.txt").read_text().splitlines()[1:]]
    everyone = sorted(p.name for p in (lfw_mini / "lfw_original_150px").iterdir())
    assert sorted(not_train + train) == everyone
    test_ids = read_pair_identities(cfg.test_pairs)
    assert report["devtest_identities"] == len(test_ids)
    assert report["overlap"] == sorted(set(test_ids) & set(train))


@pytest.mark.slow
def test_study_runs_the_chain_and_reuses_artifacts(tmp_path, lfw_mini):
    runner = CliRunner()
    cfg = _config(tmp_path, lfw_mini)
    out = tmp_path / "study"
    r = runner.invoke(app, ["study", str(cfg), "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "study.json").read_text())
    assert {x["variant"] for x in doc["runs"]} == {"softmax", "cl-rho5"}
    md = (out / "results.md").read_text()
    assert "| softmax |" in md and "view1 auc" in md
    # Second run: nothing changed, so every step is reused from its manifest.
    r = runner.invoke(app, ["study", str(cfg), "-o", str(out), "--variant", "softmax"])
    assert r.exit_code == 0, r.output
    doc2 = json.loads((out / "study.json").read_text())
    assert all(s["reused"] for s in doc2["steps"] if s["step"] != "compare")
    # The earlier runs of the other variant stay in the record and the table.
    assert {x["variant"] for x in doc2["runs"]} == {"softmax", "cl-rho5"}
    md2 = render_markdown(doc2, "cmd")
    assert md2.count("| softmax |") == 1 and md2.count("| cl-rho5 |") == 1
    assert "train center_dist_mean" in md2


@pytest.mark.parametrize("name", ["lfw_view1_cpu.toml", "lfw_view1_gpu.toml"])
def test_checked_in_experiment_configs_parse(name):
    cfg = load_study_config(ROOT / "experiments" / name)
    assert [v.name for v in cfg.variants] == [
        "softmax",
        "cl",
        "acl",
        "acl-gamma",
        "cl-rho5",
        "cl-cil",
        "sphereface-acl-gamma",
    ]
    assert len(cfg.seeds) >= 3
    assert cfg.test_pairs.name == "pairsDevTest.txt"
