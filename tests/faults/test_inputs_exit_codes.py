"""B14: an invalid option VALUE is a usage error (exit 2), like a parse error, on every
command; the message is one line naming the option. Config validation raises
``ConfigError``, a ``UsageError``, so this holds wherever a config is checked."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from facecl.cli import app
from facecl.errors import ConfigError, UsageError

runner = CliRunner()

CASES = [
    (["align", "{src}", "-o", "{out}", "--batch-size", "0"], "--batch-size"),
    (["align", "{src}", "-o", "{out}", "--factor", "5"], "--factor"),
    (["align", "{src}", "-o", "{out}", "--shard", "3/2"], "shard"),
    (["train", "{src}", "-o", "{out}", "--steps", "-5"], "steps"),
    (["train", "{src}", "-o", "{out}", "--alpha", "3"], "alpha"),
    (["train", "{src}", "-o", "{out}", "--loss", "nope"], "nope"),
    (["pack", "{src}", "-o", "{out}", "--shard-size", "0"], "shard_size"),
    (["pack", "{src}", "-o", "{out}", "--min-images", "0"], "min_images"),
    (["embed", "{src}", "{src}", "-o", "{out}", "--batch-size", "0"], "batch size"),
    (["verify", "{src}", "-o", "{out}", "--folds", "1"], "--folds"),
    (["toy", "mnist", "-o", "{out}", "--steps", "0"], "steps"),
]


@pytest.mark.parametrize(("args", "named"), CASES, ids=[f"{a[0]}:{n}" for a, n in CASES])
def test_invalid_option_value_exits_2(tmp_path, args, named):
    argv = [a.format(src=tmp_path, out=tmp_path / "out") for a in args]
    r = runner.invoke(app, argv)
    assert r.exit_code == 2, (argv, r.output)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert named in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_parse_error_and_value_error_share_exit_2(tmp_path):
    """Through a real process: a value Typer cannot parse and a value the config refuses."""
    base = [sys.executable, "-m", "facecl", "align", str(tmp_path), "-o", str(tmp_path / "o")]
    parse = subprocess.run([*base, "--batch-size", "x"], capture_output=True, text=True)
    value = subprocess.run([*base, "--batch-size", "0"], capture_output=True, text=True)
    assert parse.returncode == value.returncode == 2, (parse.stderr, value.stderr)
    assert "Traceback" not in parse.stderr + value.stderr


def test_config_error_is_a_usage_error():
    assert issubclass(ConfigError, UsageError) and ConfigError("x").exit_code == 2
