"""`facecl train` end to end through the CLI on a synthetic pack, and its error paths."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from facecl.artifacts import read_manifest
from facecl.cli import app
from facecl.errors import CheckpointError
from facecl.losses import list_center_losses, list_heads
from facecl.models import list_backbones
from facecl.train.checkpoint import build_backbone, load_checkpoint
from facecl.train.metrics import read_metrics

runner = CliRunner()
TINY = ["--arch", "tiny", "--steps", "4", "--batch-size", "8", "--workers", "0"]
TINY += ["--log-every", "2", "--checkpoint-every", "2", "--lr", "0.05", "--no-progress"]


def test_train_end_to_end(pack, tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('loss = "cil"\nfeature_dim = 8\nsteps = 100\n')
    run = tmp_path / "run"
    args = ["train", str(pack), "-o", str(run), "--config", str(cfg_file), *TINY, "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["steps"] == 4 and doc["up_to_date"] is False  # --steps beat the file's 100
    assert doc["final"]["step"] == 4 and doc["images_per_s"] > 0

    m = read_manifest(run, stage="train")
    assert m.config["loss"] == "cil" and m.config["feature_dim"] == 8 and m.config["steps"] == 4
    assert m.inputs[0]["kind"] == "artifact" and m.inputs[0]["path"] == str(pack.resolve())
    assert m.counts["classes"] == 4 and m.counts["train_images"] == 24
    for rel in ("model.pt", "metrics.jsonl", "training_curve.png", "checkpoints/last.pt"):
        assert rel in m.extra["files"] and (run / rel).is_file()
    assert not run.with_name("run.partial").exists()

    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 4]
    assert all("invariant" in r and "center_dist_mean" in r for r in records)

    ckpt = load_checkpoint(run / "model.pt")  # weights_only=True inside
    assert ckpt["arch"] == "tiny" and ckpt["loss"] == "cil" and ckpt["feature_dim"] == 8
    assert ckpt["classes_sha256"] and ckpt["config"] == m.config
    feats = build_backbone(ckpt)(torch.zeros(1, 3, *ckpt["input_size"]))
    assert feats.shape == (1, 8)
    assert torch.load(run / "model.pt", weights_only=True)["format"] == "facecl.checkpoint"

    r = runner.invoke(app, ["inspect", str(run), "--verify"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, args)  # same config and inputs: a no-op
    assert r.exit_code == 0 and json.loads(r.stdout)["up_to_date"] is True
    r = runner.invoke(app, [*args[:-1], "--seed", "1"])  # another config: refuses
    assert r.exit_code == 1 and "--force" in r.output


@pytest.mark.parametrize(
    ("option", "value", "names"),
    [
        ("--loss", "cll", list_center_losses),
        ("--head", "arcfaces", list_heads),
        ("--arch", "sphere21", list_backbones),
    ],
)
def test_unknown_names_list_the_valid_ones(pack, tmp_path, option, value, names):
    r = runner.invoke(app, ["train", str(pack), "-o", str(tmp_path / "r"), *TINY, option, value])
    assert r.exit_code == 2
    line = " ".join(r.output.split())
    assert f"'{value}'" in line and all(n in line for n in names())
    assert not (tmp_path / "r.partial").exists()


def test_every_train_config_field_is_a_generated_option():
    """The train options are TrainConfig's fields (nested center/margin flattened), no more
    and no less, each with its docstring as help and the dataclass default shown."""
    from facecl.cliconfig import field_docs, leaves
    from facecl.train.config import TrainConfig

    # wide enough that rich does not cut the long flag names (the 80-column default does)
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "140"})
    assert r.exit_code == 0
    flags = {lf.flag for lf in leaves(TrainConfig)}
    assert {"--lambda", "--alpha", "--rho", "--gamma", "--head-s", "--head-m2"} <= flags
    assert "--lam" not in flags and "--center-alpha" not in flags
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())  # help boxes unwrapped
    for flag in flags:
        assert flag in text, flag
    assert "[default: 0.003]" in text and "[default: sphere20]" in text
    assert " ".join(field_docs(TrainConfig)["seed"].split()) in text


def test_margin_from_the_cli(pack, tmp_path):
    r = runner.invoke(
        app,
        ["train", str(pack), "-o", str(tmp_path / "r"), *TINY, "--head", "cosface",
         "--head-s", "30", "--loss", "none", "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from facecl.train.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "r" / "model.pt")
    assert ckpt["config"]["margin"]["s"] == 30.0
    r = runner.invoke(app, ["train", str(pack), "-o", str(tmp_path / "q"), "--head-s", "30"])
    assert r.exit_code == 2 and "softmax" in r.output and "head_s" in r.output


def test_bad_config_value_is_a_one_line_error(pack, tmp_path):
    r = runner.invoke(app, ["train", str(pack), "-o", str(tmp_path / "r"), "--alpha", "3"])
    assert r.exit_code == 2 and "alpha must be in [0, 1]" in r.output
    r = runner.invoke(app, ["train", str(tmp_path), "-o", str(tmp_path / "r")])
    assert r.exit_code == 1 and "manifest" in r.output


def test_margin_head_parameters_from_the_config_file(pack, tmp_path):
    """``--head cosface`` with ``[train.margin] s = 30``: the trained head has s = 30 (and the
    preset's m3), recorded in the run's config; softmax with a margin is a one-line error."""
    from facecl.train.config import config_from_dict
    from facecl.train.state import build_state

    f = tmp_path / "margin.toml"
    f.write_text("[train.margin]\ns = 30\n")
    run = tmp_path / "run"
    args = ["train", str(pack), "-o", str(run), "--config", str(f), *TINY, "--lr", "0.001"]
    r = runner.invoke(app, [*args, "--head", "cosface"])
    assert r.exit_code == 0, r.output
    m = read_manifest(run, stage="train")
    assert m.config["head"] == "cosface" and m.config["margin"]["s"] == 30.0
    cfg = config_from_dict(load_checkpoint(run / "model.pt")["config"])
    head = build_state(cfg, 4, {"input_size": [24, 20]}, torch.device("cpu")).net.head
    assert (head.config.s, head.config.m3) == (30.0, 0.35)
    r = runner.invoke(app, [*args[:3], str(tmp_path / "soft"), *args[4:]])
    assert r.exit_code == 2 and "head 'softmax' has no margin parameters" in r.output


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format": "facecl.checkpoint", "version": 1, "payload": _Evil()}, bad)
    with pytest.raises(CheckpointError, match="refusing"):
        load_checkpoint(bad)


def test_planted_pickle_in_partial_run_is_refused(pack, tmp_path):
    """A pickled file where a resume would load its checkpoint: the run refuses it."""
    from facecl.artifacts import StageOutput, input_ref
    from facecl.train.config import load_train_config

    run = tmp_path / "run"
    args = ["train", str(pack), "-o", str(run), *TINY]
    cfg = load_train_config(
        None,
        {
            "arch": "tiny",
            "steps": 4,
            "batch_size": 8,
            "workers": 0,
            "log_every": 2,
            "checkpoint_every": 2,
            "lr": 0.05,
        },
    )
    so = StageOutput(run, "train", cfg, [input_ref(pack)])
    work = so.begin()
    (work / "checkpoints").mkdir()
    torch.save({"format": "facecl.checkpoint", "x": _Evil()}, work / "checkpoints" / "last.pt")
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "refusing" in r.output and "pwned" not in r.output


def test_augment_reaches_the_training_images(pack, tmp_path):
    """--augment is applied to what the loop trains on (an image-inverting transform changes
    the trained weights), and an unknown name is a one-line error before anything is written."""
    from facecl.train.config import load_train_config

    base = ["train", str(pack), *TINY, "--loss", "none", "--json"]
    r = runner.invoke(app, [*base, "-o", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "-o", str(tmp_path / "aug"), "--augment", "InvertImg"])
    assert r.exit_code == 0, r.output
    cfg = read_manifest(tmp_path / "aug").config
    assert load_train_config(None, cfg).augment == ("InvertImg",)
    a = load_checkpoint(tmp_path / "plain" / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "aug" / "model.pt")["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)
    r = runner.invoke(app, [*base, "-o", str(tmp_path / "bad"), "--augment", "InvertImag"])
    assert r.exit_code != 0 and "InvertImg" in r.output
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()


def test_study_train_keys_parse_as_train_options_including_false_flags():
    """Issue 18 item 4: every TrainConfig key a study can set (amp_dtype, amp = false,
    flip = false) reaches the generated train command as an option it parses, and the
    parsed values are the ones given (no silently dropped false flags)."""
    import typer

    from facecl.study.config import cli_args

    keys = {"amp_dtype": "float16", "amp": False, "flip": False, "lambda": 0.01, "rho": 2.0}
    args = ["P", "-o", "R", *cli_args(keys)]
    train = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    ctx = train.make_context("train", args)
    assert ctx.params["cfg__amp_dtype"] == "float16"
    assert ctx.params["cfg__amp"] is False and ctx.params["cfg__flip"] is False
    assert ctx.params["cfg__lam"] == 0.01 and ctx.params["cfg__center__rho"] == 2.0
    r = runner.invoke(app, ["train", "P", "-o", "R", "--amp-dtype", "fp8"])
    assert r.exit_code == 2 and "bfloat16" in r.output
