"""The option generator on its own small dataclasses, through a real Typer app."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
import typer
from typer.testing import CliRunner

from facecl.cliconfig import Given, Options, build, config_command, field_docs, given, leaves

runner = CliRunner()

Mode = Literal["fast", "exact"]


@dataclass(frozen=True)
class Inner:
    alpha: float = 0.5
    """Center rate alpha."""
    kind: Literal["a", "b"] = "a"
    """Inner kind."""


@dataclass(frozen=True)
class Head:
    s: float = 30.0
    """Scale s of the head."""


@dataclass(frozen=True)
class Demo:
    batch_size: int = 64
    """Images per batch,
    on two lines."""
    lam: float = field(default=0.003, metadata={"cli_name": "--lambda", "cli_short": "-l"})
    """Weight lambda."""
    mode: Mode = "fast"
    """How to run: fast or exact."""
    flip: bool = True
    """Random flips."""
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    """Three thresholds."""
    fars: tuple[float, ...] = (1e-3,)
    """Operating points."""
    names: tuple[str, ...] = ()
    """Lists to exclude."""
    root: Path | None = None
    """A folder."""
    secret: str = field(default="x", metadata={"cli_exclude": True})
    """Not on the CLI."""
    center: Inner = field(default_factory=lambda: Inner(alpha=0.25), metadata={"cli_prefix": ""})
    head: Head = field(default_factory=Head)


@dataclass(frozen=True)
class Runtime:
    device: Literal["auto", "cpu"] = "auto"
    """Where it runs."""


def make_app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode="rich", add_completion=False)

    @app.command("run")
    @config_command(cfg=Demo, rt=Options(Runtime, panel="Runtime"))
    def run(
        src: Annotated[Path, typer.Argument(help="Input.")],
        cfg: Given,
        rt: Given,
        json_out: Annotated[bool, typer.Option("--json", help="JSON.")] = False,
    ) -> None:
        """Run the demo."""
        typer.echo(
            json.dumps({"src": str(src), "cfg": cfg, "rt": rt, "json": json_out}, default=str)
        )

    @app.command("other")
    def other() -> None:
        """A second command, so 'run' stays a subcommand."""

    return app


def invoke(*args: str):
    return runner.invoke(make_app(), ["run", *args])


def flat(help_text: str) -> str:
    """The help without the box drawing and line wraps (a wrapped help cell reads on)."""
    return " ".join(help_text.replace("│", " ").split())


def test_docstrings_are_read_from_the_source():
    docs = field_docs(Demo)
    assert docs["batch_size"] == "Images per batch, on two lines."
    assert docs["mode"] == "How to run: fast or exact."
    assert "center" not in docs  # no string under it


def test_nothing_given_is_an_empty_dict():
    r = invoke("in")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"src": "in", "cfg": {}, "rt": {}, "json": False}


def test_given_values_parse_to_a_nested_dict():
    r = invoke(
        "in", "--batch-size", "8", "-l", "0.01", "--mode", "exact", "--no-flip",
        "--thresholds", "0.1,0.2,0.3", "--fars", "0.01,0.1", "--fars", "0.5",
        "--names", "lfw", "--names", "x.txt", "--root", "/tmp", "--alpha", "0.9",
        "--kind", "b", "--head-s", "64", "--device", "cpu", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["cfg"] == {
        "batch_size": 8,
        "lam": 0.01,
        "mode": "exact",
        "flip": False,
        "thresholds": [0.1, 0.2, 0.3],
        "fars": [0.01, 0.1, 0.5],
        "names": ["lfw", "x.txt"],
        "root": "/tmp",
        "center": {"alpha": 0.9, "kind": "b"},
        "head": {"s": 64.0},
    }
    assert doc["rt"] == {"device": "cpu"} and doc["json"] is True


def test_build_merges_given_over_the_defaults():
    cfg = build(Demo, given({"lam": 0.1, "center": {"kind": "b"}, "head": {"s": None}}))
    assert cfg.lam == 0.1 and cfg.batch_size == 64
    assert cfg.center == Inner(alpha=0.25, kind="b")  # the outer default instance, updated
    assert cfg.head == Head()


def test_help_shows_docstring_default_and_choices():
    r = invoke("--help")
    assert r.exit_code == 0
    out = flat(r.output)
    assert "Images per batch, on two lines. [default: 64]" in out
    assert "--lambda" in out and "-l" in out and "Weight lambda. [default: 0.003]" in out
    assert "<fast|exact>" in out and "[default: fast]" in out
    assert "--flip --no-flip" in out and "[default: flip]" in out
    assert "[default: 0.6,0.7,0.7]" in out and "[default: 0.001]" in out
    assert "Center rate alpha. [default: 0.25]" in out  # the default_factory's instance
    assert "--head-s" in out and "[default: 30]" in out
    assert "Runtime" in out and "<auto|cpu>" in out
    assert "--secret" not in out and "--center" not in out


def test_bad_choice_exits_2_with_the_valid_names():
    r = invoke("in", "--mode", "slow")
    assert r.exit_code == 2
    assert "'fast', 'exact'" in flat(r.output)


@pytest.mark.parametrize("value", ["0.1,0.2", "a,b,c"])
def test_bad_tuple_exits_2(value):
    r = invoke("in", "--thresholds", value)
    assert r.exit_code == 2 and "three comma-separated" in flat(r.output)


def test_leaf_names_follow_prefixes():
    flags = [lf.flag for lf in leaves(Demo)]
    assert flags[:2] == ["--batch-size", "--lambda"]
    assert "--alpha" in flags and "--head-s" in flags and "--secret" not in flags
    assert [lf.flag for lf in leaves(Options(Head, prefix="x-"))] == ["--x-s"]


def test_a_clash_with_the_commands_own_option_fails_at_definition():
    with pytest.raises(TypeError, match="--device"):

        @config_command(rt=Runtime)
        def cmd(rt: Given, device: Annotated[str, typer.Option("--device")] = "") -> None:
            pass


def test_a_subset_with_its_own_shown_defaults():
    """What ``facecl toy`` needs: a few TrainConfig fields, with the toy's base shown."""
    spec = Options(Demo, only=("lam", "center.alpha"), defaults={"lam": 0.01, "alpha": 0.1})
    got = {lf.flag: lf.default for lf in leaves(spec)}
    assert got == {"--lambda": 0.01, "--alpha": 0.1}
    assert [lf.flag for lf in leaves(Options(Demo, exclude=("center", "head.s")))][-1] == "--root"
