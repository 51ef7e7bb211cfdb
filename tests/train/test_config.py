"""TrainConfig: file + CLI overrides, unknown keys with suggestions, types, schedule."""

from __future__ import annotations

import dataclasses

import pytest

from facecl.artifacts import config_dict
from facecl.errors import ConfigError
from facecl.losses.config import CenterLossConfig, MarginConfig
from facecl.train.config import (
    TOY_TRAIN_DEFAULTS,
    TrainConfig,
    config_from_dict,
    flat_options,
    load_train_config,
)
from facecl.train.loop import lr_at


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.1, 0.9, 5e-4)
    assert (cfg.lam, cfg.center.alpha, cfg.center.rho) == (0.003, 0.5, 0.0)
    assert cfg.center == CenterLossConfig() and cfg.margin == MarginConfig()
    assert cfg.milestones() == [16_000, 24_000]  # ECCV: 16K, 24K of 28K
    assert (cfg.arch, cfg.head, cfg.loss) == ("sphere20", "softmax", "cl")


def test_toml_file_then_cli_overrides(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('arch = "tiny"\nsteps = 500\nlambda = 0.01\nbatch-size = 64\nlr_drops = [0.5]\n')
    cfg = load_train_config(f, {"steps": 80, "lr": None, "rho": 5})
    assert cfg.arch == "tiny" and cfg.lam == 0.01 and cfg.batch_size == 64
    assert cfg.steps == 80  # the CLI wins over the file
    assert cfg.lr == TrainConfig.lr  # None = not given on the CLI
    assert cfg.center.rho == 5.0 and isinstance(cfg.center.rho, float)
    assert cfg.lr_drops == (0.5,) and cfg.milestones() == [40]


def test_yaml_file_with_train_section(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "study.yaml"
    f.write_text("train:\n  loss: acl\n  flip: false\n  seed: 3\n")
    cfg = load_train_config(f)
    assert (cfg.loss, cfg.flip, cfg.seed) == ("acl", False, 3)


@pytest.mark.parametrize(
    ("key", "suggestion"), [("lamda", "lambda"), ("batchsize", "batch_size"), ("stepz", "steps")]
)
def test_unknown_key_names_the_closest(tmp_path, key, suggestion):
    f = tmp_path / "bad.toml"
    f.write_text(f"{key} = 1\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(f)
    assert f"unknown config key {key!r} in {f}" in e.value.message
    assert f"did you mean {suggestion!r}" in e.value.hint


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('steps = "many"', "'steps' in"),
        ("steps = 1.5", "must be int"),
        ("flip = 1", "must be bool"),
        ("lr_drops = 0.5", "must be a list"),
        ("arch = 3", "must be str"),
    ],
)
def test_wrong_types_fail_clearly(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(f)
    assert needle in e.value.one_line()


def test_value_checks_and_parse_errors(tmp_path):
    with pytest.raises(ConfigError, match="alpha must be in"):
        load_train_config(None, {"alpha": 2.0})
    with pytest.raises(ConfigError, match="unknown sampler"):
        load_train_config(None, {"sampler": "weighted"})
    f = tmp_path / "broken.toml"
    f.write_text("steps = \n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_train_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_train_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown config format"):
        (tmp_path / "x.ini").write_text("")
        load_train_config(tmp_path / "x.ini")


def test_round_trip_through_manifest_dict():
    cfg = load_train_config(None, {"lr_drops": [0.25, 0.75], "feature_dim": 8})
    back = config_from_dict(dataclasses.asdict(cfg))
    assert back == cfg


def test_toy_defaults_are_valid_keys():
    cfg = load_train_config(None, None, base=TOY_TRAIN_DEFAULTS)
    assert cfg.arch == "lenetpp" and cfg.feature_dim == 2


def test_step_schedule_scales_with_run_length():
    cfg = TrainConfig(steps=28, lr=0.1)
    lrs = [lr_at(cfg, s) for s in range(28)]
    assert lrs[15] == pytest.approx(0.1) and lrs[16] == pytest.approx(0.01)
    assert lrs[23] == pytest.approx(0.01) and lrs[24] == pytest.approx(0.001)


NESTED = """
[train]
head = "cosface"
lambda = 0.01

[train.center]
alpha = 0.25
rho = 5
gamma = 0.002

[train.margin]
s = 30
m3 = 0.4
"""

FLAT = """
head = "cosface"
lambda = 0.01
alpha = 0.25
rho = 5
gamma = 0.002
head-s = 30
head_m3 = 0.4
"""


def test_nested_and_flat_config_files_give_equal_configs(tmp_path):
    (tmp_path / "nested.toml").write_text(NESTED)
    (tmp_path / "flat.toml").write_text(FLAT)
    nested = load_train_config(tmp_path / "nested.toml")
    assert nested == load_train_config(tmp_path / "flat.toml")
    assert nested.center == CenterLossConfig(alpha=0.25, rho=5.0, gamma=0.002)
    assert nested.margin == MarginConfig(s=30.0, m3=0.4) and nested.lam == 0.01
    # overrides as flat keys or as nested tables, per field over the file
    a = load_train_config(tmp_path / "nested.toml", {"rho": 1, "head_s": None})
    b = load_train_config(tmp_path / "flat.toml", {"center": {"rho": 1}, "margin": {"s": None}})
    assert a == b and a.center.rho == 1.0 and a.center.alpha == 0.25 and a.margin.s == 30.0


def test_config_dicts_are_nested_and_old_flat_ones_still_read(tmp_path):
    cfg = load_train_config(None, {"head": "arcface", "rho": 2, "head_s": 16})
    d = config_dict(cfg)
    assert d["center"]["rho"] == 2.0 and d["margin"]["s"] == 16.0 and "rho" not in d
    assert config_from_dict(d) == cfg
    old = {k: v for k, v in d.items() if k not in ("center", "margin")}  # a pre-nesting manifest
    old.update(alpha=0.5, rho=2.0, gamma=0.001)
    assert config_from_dict({**old, "head_s": 16.0}) == cfg
    assert flat_options({"center": {"rho": 2}, "margin": {"s": 16}, "loss": "cl"}) == {
        "rho": 2,
        "head_s": 16,
        "loss": "cl",
    }


def test_softmax_rejects_a_margin(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_train_config(None, {"head_s": 30})
    assert "head 'softmax' has no margin parameters, got head_s=30" in e.value.message
    assert "cosface" in e.value.hint
    with pytest.raises(ConfigError, match="m1 must be >= 1"):
        load_train_config(None, {"head": "cosface", "margin": {"m1": 0.5}})


@pytest.mark.parametrize(
    ("text", "where", "suggestion"),
    [
        ("[train.center]\nalpah = 0.5\n", "in [center]", "alpha"),
        ("[train.margin]\nss = 30\n", "in [margin]", "s"),
        ("alpah = 0.5\n", "", "alpha"),
        ("head_ss = 30\n", "", "head_s"),
    ],
)
def test_typo_in_a_nested_key_names_the_closest(tmp_path, text, where, suggestion):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_train_config(f)
    assert f"{where} in {f}".strip() in e.value.message
    assert f"did you mean {suggestion!r}" in e.value.hint
    with pytest.raises(ConfigError, match="must be a table"):
        load_train_config(None, {"center": 0.5})


def test_paper_presets_sit_between_the_defaults_and_the_options():
    from facecl.train.config import TRAIN_PRESETS, preset_layer

    eccv = load_train_config(None, {}, base=preset_layer("eccv2016", TRAIN_PRESETS))
    assert eccv == TrainConfig()  # the defaults are ECCV's schedule
    ijcv = load_train_config(None, {"steps": 900}, base=preset_layer("ijcv2019", TRAIN_PRESETS))
    assert (ijcv.batch_size, ijcv.lam, ijcv.lr, ijcv.steps) == (128, 0.01, 0.1, 900)
    assert TrainConfig(steps=45_000, lr_drops=ijcv.lr_drops).milestones() == [25_000, 38_000]
    assert preset_layer(None, TRAIN_PRESETS) is None
    with pytest.raises(ConfigError, match="did you mean 'ijcv2019'"):
        preset_layer("ijcv", TRAIN_PRESETS)
