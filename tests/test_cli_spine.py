import json

import pytest
import typer
from typer.testing import CliRunner

from facecl import __version__
from facecl.artifacts import StageOutput
from facecl.cli import app

runner = CliRunner()

# The command line's whole surface, in --help order: (name, subcommands or None).
COMMANDS = [
    ("align", None),
    ("pack", None),
    ("train", None),
    ("embed", None),
    ("export", None),
    ("verify", None),
    ("inspect", None),
    ("study", None),
    ("toy", ["mnist"]),
]


def command_table(group: typer.core.TyperGroup) -> list[tuple[str, list[str] | None]]:
    ctx = typer.Context(group)
    table = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        group_of = isinstance(cmd, typer.core.TyperGroup)
        table.append((name, cmd.list_commands(typer.Context(cmd)) if group_of else None))
    return table


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.stdout


def test_commands_table_is_exactly_the_stages_in_order():
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    assert command_table(root) == COMMANDS


@pytest.mark.parametrize(
    "argv", [[n] if sub is None else [n, s] for n, sub in COMMANDS for s in (sub or [None])]
)
def test_every_command_has_help(argv):
    r = runner.invoke(app, [*argv, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout and "--help" in r.stdout


def test_unknown_command_is_usage_error():
    r = runner.invoke(app, ["alignn"])
    assert r.exit_code == 2


def test_inspect_json_and_tree(tmp_path):
    so = StageOutput(tmp_path / "a", "align", {"size": "112x96"}, [])
    so.begin()
    so.commit({"processed": 2, "skipped": {"no_face": 1}})
    r = runner.invoke(app, ["inspect", str(tmp_path / "a"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["manifest"]["config"] == {"size": "112x96"}
    assert doc["lineage"]["counts"]["skipped"] == {"no_face": 1}
    r = runner.invoke(app, ["inspect", str(tmp_path / "a")])
    assert r.exit_code == 0 and "facecl.align/2" in r.output


def test_inspect_missing_artifact_is_one_line_error(tmp_path):
    r = runner.invoke(app, ["inspect", str(tmp_path / "nope")])
    assert r.exit_code == 1
    assert "no facecl artifact" in r.output and "Traceback" not in r.output


def test_error_stays_one_line_with_a_long_path(tmp_path):
    # The console is 80 columns wide off a terminal (CI); an error must not wrap there.
    deep = tmp_path / ("d" * 120) / "nope"
    r = runner.invoke(app, ["inspect", str(deep)])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(deep) in lines[0]


# Commands whose options are generated from config dataclasses (facecl.cliconfig).
GENERATED = {
    "align": ("facecl.align.config", ["AlignConfig", "AlignRuntime"]),
    "pack": ("facecl.pack.config", ["PackConfig"]),
    "embed": ("facecl.embed.config", ["EmbedConfig"]),
    "export": ("facecl.embed.config", ["ExportConfig"]),
    "verify": ("facecl.verify.config", ["VerifyConfig"]),
}


@pytest.mark.parametrize("command", sorted(GENERATED))
def test_config_options_are_generated_from_the_dataclass(command):
    """Every config field is an option of its command whose help is the field's docstring
    plus the dataclass default, and whose CLI default is None ("not given")."""
    import dataclasses
    import importlib

    import typer.main

    from facecl.cliconfig import field_docs, leaves

    params = {
        opt: p
        for p in typer.main.get_command(app).commands[command].params
        for opt in [*p.opts, *p.secondary_opts]
    }
    module, names = GENERATED[command]
    for name in names:
        cls = getattr(importlib.import_module(module), name)
        docs = field_docs(cls)
        shown = 0
        for leaf in leaves(cls):
            p = params[leaf.flag]
            assert p.default is None, leaf.flag
            field = leaf.path[-1]
            assert p.help.startswith(docs[field].replace("``", "")[:30]), leaf.flag
            if leaf.default not in (None, (), ""):
                assert p.help.endswith("]") and "\\[default: " in p.help, leaf.flag
            shown += 1
        excluded = [f for f in dataclasses.fields(cls) if f.metadata.get("cli_exclude")]
        assert shown == len(dataclasses.fields(cls)) - len(excluded)


def test_a_default_shown_is_the_dataclass_value():
    import typer.main

    from facecl.align.config import AlignConfig
    from facecl.verify.config import VerifyConfig

    cmds = typer.main.get_command(app).commands
    align = {p.name: p for p in cmds["align"].params}
    assert align["cfg__factor"].help.endswith(f"\\[default: {AlignConfig.factor:g}]")
    assert align["cfg__thresholds"].help.endswith("\\[default: 0.6,0.7,0.7]")
    verify = {o: p for p in cmds["verify"].params for o in p.opts}
    assert verify["--far"].help.endswith("\\[default: 0.001,0.01]")
    assert VerifyConfig().far_targets == (0.001, 0.01)
    assert verify["-p"] is verify["--protocol"]
