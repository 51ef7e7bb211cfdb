"""`facecl align` through the real Typer app."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from facecl.cli import app

runner = CliRunner()


@pytest.fixture
def tree(tmp_path, mini_paths):
    for p in mini_paths[:3]:
        (tmp_path / "src" / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "src" / p.parent.name / p.name)
    (tmp_path / "src" / "Broken").mkdir()
    (tmp_path / "src" / "Broken" / "zero.jpg").write_bytes(b"")
    return tmp_path / "src"


def test_help_lists_options():
    r = runner.invoke(app, ["align", "--help"])
    assert r.exit_code == 0
    for opt in ["--size", "--on-miss", "--landmarks", "--shard", "--merge", "--workers", "--json"]:
        assert opt in r.output


def test_json_summary_exit_zero_with_skips_and_noop(tmp_path, tree):
    out = tmp_path / "out"
    args = ["align", str(tree), "-o", str(out), "--json", "--device", "cpu", "--size", "112x112"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["counts"]["processed"] == 4 and doc["counts"]["written"] == 3
    assert doc["counts"]["skipped"] == {"empty_file": 1}
    assert not doc["noop"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and json.loads(r.stdout)["noop"]
    r = runner.invoke(app, args[:-2])  # a different size: refuses to overwrite
    assert r.exit_code == 1 and "--force" in r.output
    r = runner.invoke(app, ["align", str(tree), "-o", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output and "empty_file" in r.output


def test_shards_and_merge_via_cli(tmp_path, tree):
    outs = []
    for k in (1, 2):
        out = tmp_path / f"s{k}"
        args = ["align", str(tree), "-o", str(out), "--shard", f"{k}/2", "--chunk-size", "2"]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        outs.append(str(out))
    r = runner.invoke(app, ["align", "--merge", *outs, "-o", str(tmp_path / "m"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"]["processed"] == 4


@pytest.mark.parametrize(
    "extra,code,msg",
    [
        (["--on-miss", "landmarks"], 2, "--landmarks"),
        (["--shard", "0/4"], 2, "1..N"),
        (["--shard", "x"], 2, "K/N"),
        (["--thresholds", "0.6,0.7"], 2, "three"),
        (["--min-face", "5"], 2, "--min-face"),
        (["--size", "100x100"], 2, "100x100"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, tree, extra, code, msg):
    r = runner.invoke(app, ["align", str(tree), "-o", str(tmp_path / "o"), *extra])
    assert r.exit_code == code, r.output
    assert msg in r.output and "Traceback" not in r.output


def test_missing_input_and_merge_misuse(tmp_path, tree):
    r = runner.invoke(app, ["align", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "not found" in r.output
    r = runner.invoke(
        app, ["align", "--merge", str(tree), "-o", str(tmp_path / "o"), "--size", "112x96"]
    )
    assert r.exit_code == 2 and "--size" in r.output
    r = runner.invoke(app, ["align", str(tree), str(tree), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "one input" in r.output
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["align", str(tmp_path / "empty"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "no images found" in r.output
