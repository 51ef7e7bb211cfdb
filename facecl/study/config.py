"""StudyConfig: one TOML file describes the whole reproducible study (issue #9).

The file has sections ``[data]``, ``[align]``, ``[pack]``, ``[train]``, ``[embed]``,
``[verify]`` (each a table of that stage's settings: config field names or option names,
``key = value`` -> ``--option value``), ``seeds = [...]`` and ``[[variants]]`` (``name`` plus
train settings that override ``[train]``). Relative paths in ``[data]`` are resolved against
the config file's directory. Everything is checked when the file loads: every stage section
builds its configs and every variant builds its ``TrainConfig``, so a typo anywhere fails
(naming the section or variant) before any step runs.
"""

from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA_KEYS = ("lfw_root", "train_people", "test_pairs", "train_pairs", "blufr_config")
TOP_KEYS = (
    "name",
    "description",
    "seeds",
    "data",
    "align",
    "pack",
    "train",
    "embed",
    "verify",
    "variants",
)


@dataclass(frozen=True)
class Variant:
    name: str
    """Short name used in paths and tables (e.g. ``cl-rho5``)."""
    train: dict[str, Any]
    """Train options overriding ``[train]`` (e.g. ``loss = "cl"``, ``rho = 5``)."""


@dataclass(frozen=True)
class StudyConfig:
    name: str
    """Study name (report titles)."""
    lfw_root: Path
    """LFW originals: ``<root>/<Name>/<Name>_NNNN.jpg``."""
    train_people: Path
    """``peopleDevTrain.txt``: the identities packed for training."""
    test_pairs: Path
    """``pairsDevTest.txt``: the 1,000 View 1 test pairs (their identities are excluded)."""
    train_pairs: Path | None = None
    """``pairsDevTrain.txt`` (View 1 threshold selection); default: next to test_pairs."""
    blufr_config: Path | None = None
    """``blufr_lfw_config.mat``; BLUFR is skipped when absent."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: every variant is trained once per seed."""
    align: dict[str, Any] = field(default_factory=dict)
    pack: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    embed: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] = field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    description: str = ""
    source: Path | None = None
    """The config file this was read from."""


def load_study_config(path: str | Path) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study config not found: {path}", "pass a TOML file (see experiments/)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML ({e})", "fix the syntax") from None
    _check_keys(path, raw, TOP_KEYS, "key")
    data = raw.get("data", {})
    _check_keys(path, data, DATA_KEYS, "[data] key")
    for key in ("lfw_root", "train_people", "test_pairs"):
        if key not in data:
            raise ConfigError(f"{path}: [data] lacks {key!r}", "add it (a path)")

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else (path.parent / q).resolve()

    def resolve_opt(p: str | None) -> Path | None:
        return None if p is None else resolve(p)

    variants = _read_variants(path, raw.get("variants", []))
    train = raw.get("train", {})
    check_train(path, train, variants)
    stages = {name: stage_options(path, name, raw.get(name, {})) for name in STAGE_CONFIGS}
    test_pairs = resolve(data["test_pairs"])
    return StudyConfig(
        name=raw.get("name", path.stem),
        description=raw.get("description", ""),
        lfw_root=resolve(data["lfw_root"]),
        train_people=resolve(data["train_people"]),
        test_pairs=test_pairs,
        train_pairs=resolve_opt(data.get("train_pairs"))
        or (test_pairs.parent / "pairsDevTrain.txt"),
        blufr_config=resolve_opt(data.get("blufr_config")),
        seeds=tuple(int(s) for s in raw.get("seeds", [0])),
        align=stages["align"],
        pack=stages["pack"],
        train=train,
        embed=stages["embed"],
        verify=stages["verify"],
        variants=tuple(variants),
        source=path.resolve(),
    )


def _check_keys(path: Path, table: dict[str, Any], valid: tuple[str, ...], what: str) -> None:
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
            raise ConfigError(f"{path}: unknown {what} {key!r}", hint)


def _read_variants(path: Path, entries: list[dict[str, Any]]) -> list[Variant]:
    variants: list[Variant] = []
    seen: set[str] = set()
    for i, v in enumerate(entries):
        if "name" not in v:
            raise ConfigError(f"{path}: variant #{i + 1} has no name", 'add name = "..."')
        if v["name"] in seen:
            raise ConfigError(f"{path}: variant {v['name']!r} appears twice", "rename one")
        seen.add(v["name"])
        variants.append(Variant(name=v["name"], train={k: x for k, x in v.items() if k != "name"}))
    if not variants:
        raise ConfigError(f"{path}: no [[variants]]", "add at least one variant")
    return variants


def check_train(path: Path, train: dict[str, Any], variants: list[Variant]) -> None:
    """Build ``[train]`` and every variant's ``TrainConfig`` now, so a typo in any of them
    (a key, a type, a value, an arch/head/loss name) fails before anything runs."""
    from facecl.train.config import TrainConfig, merge_config
    from facecl.train.state import validate_names

    for where, overrides in [
        ("[train]", {}),
        *((f"variant {v.name!r}", v.train) for v in variants),
    ]:
        try:
            validate_names(merge_config(TrainConfig, train, overrides))
        except ConfigError as e:
            raise ConfigError(f"{path}: {where}: {e.message}", e.hint) from None


# The config classes behind each stage section's options (train is checked by check_train).
STAGE_CONFIGS: dict[str, tuple[str, ...]] = {
    "align": ("facecl.align.config:AlignConfig", "facecl.align.config:AlignRuntime"),
    "pack": ("facecl.pack.config:PackConfig",),
    "embed": ("facecl.embed.config:EmbedConfig",),
    "verify": ("facecl.verify.config:VerifyConfig",),
}


def _classes(stage: str) -> list[type]:
    import importlib

    out = []
    for ref in STAGE_CONFIGS[stage]:
        module, name = ref.split(":")
        out.append(getattr(importlib.import_module(module), name))
    return out


def stage_options(path: Path, stage: str, section: dict[str, Any]) -> dict[str, Any]:
    """A stage section checked against its config classes: each key must name an option
    (field name or option name), the values must build the configs. Returns the section
    keyed by option name (``pca_dim`` -> ``pca``), a fixed-length list as ``"a,b,c"``."""
    from facecl.cliconfig import build, find_option, leaves

    classes = _classes(stage)
    out: dict[str, Any] = {}
    values: list[dict[str, Any]] = [{} for _ in classes]
    for key, value in section.items():
        found = find_option(classes, key)
        if found is None:
            names = sorted(lf.path[-1] for cls in classes for lf in leaves(cls))
            close = difflib.get_close_matches(key.replace("-", "_"), names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(names)}"
            raise ConfigError(f"{path}: unknown [{stage}] key {key!r}", hint)
        i, leaf = found
        node = values[i]
        for part in leaf.path[:-1]:
            node = node.setdefault(part, {})
        node[leaf.path[-1]] = tuple(value) if isinstance(value, list) else value
        csv = isinstance(value, list) and leaf.csv
        out[leaf.flag.lstrip("-")] = ",".join(str(v) for v in value) if csv else value
    for cls, given in zip(classes, values, strict=True):
        try:
            build(cls, given)
        except ConfigError as e:
            raise ConfigError(f"{path}: [{stage}]: {e.message}", e.hint) from None
    return out


def cli_args(options: dict[str, Any]) -> list[str]:
    """``{"min_images": 5, "flip": False, "exclude": ["a", "b"]}`` -> CLI flags (a False
    bool is ``--no-x``, a list repeats its option)."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return args
