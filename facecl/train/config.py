"""The one home of `facecl train` defaults, and the config-file reader.

``TrainConfig`` holds every option of a training run; each CLI option maps to one field.
Two groups are nested dataclasses declared beside the code that uses them
(``facecl.losses.config``): ``center`` (``CenterLossConfig``: alpha, rho, gamma, ...) and
``margin`` (``MarginConfig``: the head's s, m1, m2, m3, None = the head preset's value).
A nested field's ``metadata["cli_prefix"]`` names its flat spelling: ``center.alpha`` is
``alpha`` (``--alpha``), ``margin.s`` is ``head_s`` (``--head-s``).

A run is configured by, in increasing priority: these defaults, a TOML or YAML file
(``--config FILE``), then the CLI options given explicitly. Keys are the field names, with
``-`` accepted for ``_`` and ``lambda`` for ``lam``; a nested group is a table
(``[train.center] alpha = 0.5``, ``[train.margin] s = 30``) or its flat keys
(``alpha = 0.5``, ``head_s = 30``, as in configs written before the nesting). An unknown key,
nested or flat, fails with the closest valid name. ``ToyConfig`` holds the extra options of
``facecl toy mnist``.

Paper defaults (ECCV 2016 Sec. 4.1, Wu 2018 Sec. 4.1.3): SGD with momentum 0.9 and weight
decay 5e-4, lr 0.1 divided by 10 at 16K and 24K of 28K iterations, batch 256, center-loss
weight lambda 0.003 and center rate alpha 0.5 (ECCV Sec. 4.2 picks lambda 0.003 and alpha 0.5
from Fig. 5). IJCV 2019 Sec. 4.1 trains with batch 128, lr 0.1 divided by 10 at 25K and 38K
of 45K, and Sec. 4.2 fixes lambda 0.01 for its study: ``--preset ijcv2019`` (``TRAIN_PRESETS``; the
defaults are ``eccv2016``). The learning-rate drops are kept as fractions of the run (16/28
and 24/28) so a short run follows the same shape.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from facecl.device import Device, check_device
from facecl.errors import ConfigError
from facecl.losses.config import HEAD_PRESETS, CenterLossConfig, MarginConfig

Sampler = Literal["uniform", "balanced"]
AmpDtype = Literal["bfloat16", "float16"]
Split = Literal["train", "all"]

# Field metadata of a runtime-only setting: how the work is done, not what it produces.
# It is recorded in the manifest but not fingerprinted (a run resumes across changes of it).
RUNTIME = {"runtime": True}

# Config-file / override spellings that are not field names.
ALIASES = {"lambda": "lam"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Stored as the manifest's ``config``."""

    # ---- model and losses
    arch: str = "sphere20"
    """Backbone name (``facecl.models`` registry; an unknown name lists the valid ones)."""

    feature_dim: int | None = None
    """Feature (FC1) dimension; None = the backbone's default (512 for sphere nets)."""

    head: str = "softmax"
    """Head name: softmax or a margin head (``facecl.losses`` head registry)."""

    head_bias: bool = True
    """The ``softmax`` head's bias b of W^T x + b (ECCV Eq. 1); Wu's caffe-face MNIST net has
    none (``bias_term: false``). Margin heads have no bias."""

    loss: str = "cl"
    """Center-loss name, or none for softmax only (``facecl.losses`` center-loss registry)."""

    lam: float = field(default=0.003, metadata={"cli_name": "--lambda"})
    """lambda, the weight of the center term (ECCV Eq. 5; CLI ``--lambda``). ECCV Sec. 4.2:
    0.003; IJCV Sec. 4.2 fixes 0.01 for its study. Ignored with ``loss = none``. It stays
    here, not in ``center``: it weights the term outside the loss module."""

    center: CenterLossConfig = field(default_factory=CenterLossConfig, metadata={"cli_prefix": ""})
    """The center loss's own options (alpha, rho, gamma, ...; ``facecl.losses.config``).
    Flat keys / CLI options without a prefix: ``alpha``, ``rho``, ``gamma``."""

    margin: MarginConfig = field(default_factory=MarginConfig, metadata={"cli_prefix": "head-"})
    """The margin head's s, m1, m2, m3 over its preset (None = the preset's value); flat keys
    / CLI options ``head_s`` (``--head-s``), ``head_m1``, ... Not allowed with ``softmax``."""

    # ---- optimiser and schedule
    lr: float = 0.1
    """Initial SGD learning rate (ECCV / IJCV / Wu: 0.1)."""

    momentum: float = 0.9
    """SGD momentum (ECCV / IJCV: 0.9)."""

    weight_decay: float = 5e-4
    """L2 weight decay on weights and PReLU slopes; biases get none (caffe decay_mult 0)."""

    lr_drops: tuple[float, ...] = (16 / 28, 24 / 28)
    """Fractions of ``steps`` at which the lr is multiplied by ``lr_factor`` (ECCV: 16K and
    24K of 28K iterations)."""

    lr_factor: float = 0.1
    """Multiplier applied at each drop ("divided by 10")."""

    batch_size: int = 256
    """Global mini-batch (split evenly across DDP processes). ECCV: 256, IJCV Sec. 4.1: 128."""

    steps: int = 28_000
    """Number of SGD iterations (ECCV: 28K)."""

    seed: int = 0
    """Seeds initialisation, data order and flips: same seed -> same weights on CPU."""

    # ---- data
    split: Split = "train"
    """Pack split to train on: ``train`` or ``all`` (train + val)."""

    sampler: Sampler = "uniform"
    """``uniform``: a seeded permutation per epoch; ``balanced``: every class equally often
    in expectation (with replacement)."""

    flip: bool = True
    """Random horizontal flips (p = 0.5, ECCV Sec. 4.1), drawn from (seed, step)."""

    workers: int = field(default=2, metadata=RUNTIME)
    """DataLoader worker processes (0 = load in the training process)."""

    augment: tuple[str, ...] = ()
    """Augmentation of each training crop, in the loader workers, before the flip and
    normalisation: a preset (none, light, strong) and/or albumentations transforms as Name
    or Name(arg=literal, ...), e.g. GaussianBlur(p=0.2) (facecl.pack.augment). Seeded from
    --seed: the same seed and --workers give the same images; the draws are not
    checkpointed, so a resumed run is not bit-identical with augment."""

    # ---- runtime
    device: Device = field(default="auto", metadata=RUNTIME)
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""

    threads: int = field(default=0, metadata=RUNTIME)
    """CPU threads for torch (``torch.set_num_threads``); 0 = torch's default (all cores;
    under ``--ddp N`` the cores split between the processes)."""

    shard_classes: bool = field(default=False, metadata=RUNTIME)
    """Model-parallel head and centers under DDP (``--ddp N`` >= 2 or torchrun), Partial
    FC's approach: rank r holds the head rows and centers of classes [lo_r, hi_r), the
    batch's features are all-gathered and the softmax normaliser all-reduced, so each rank
    holds 1/N of them; the same losses and weights as one process (float rounding)."""

    sample_rate: float = 1.0
    """Partial FC's sampling with ``--shard-classes``: each step's softmax runs over the
    batch's classes and a random rate share of the others (r in (0, 1]; 1 = all classes,
    exact). Drawn from (seed, step, rank). The center terms stay exact."""

    amp: bool = True
    """Mixed precision on CUDA (autocast; the losses always run in float32). No effect on CPU."""

    amp_dtype: AmpDtype = "bfloat16"
    """Autocast dtype on CUDA: ``bfloat16`` or ``float16`` (with loss scaling)."""

    checkpoint_every: int = 1000
    """Steps between checkpoints (``checkpoints/last.pt``); one is also written at the end."""

    log_every: int = 20
    """Steps between ``metrics.jsonl`` records and progress updates."""

    def __post_init__(self) -> None:
        checks = [
            (self.lam >= 0, f"lambda must be >= 0, got {self.lam}", "e.g. 0.003"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}", "e.g. 0.1"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}", "0.9"),
            (self.weight_decay >= 0, "weight_decay must be >= 0", "e.g. 5e-4"),
            (
                all(0 < f < 1 for f in self.lr_drops),
                f"lr_drops must be fractions of the run in (0, 1), got {list(self.lr_drops)}",
                "e.g. [0.571, 0.857]",
            ),
            (0 < self.lr_factor <= 1, "lr_factor must be in (0, 1]", "e.g. 0.1"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}", "256"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}", "e.g. 28000"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers}", "e.g. 2"),
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}", "e.g. 1"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1", "e.g. 1000"),
            (self.log_every >= 1, "log_every must be >= 1", "e.g. 20"),
            (
                0 < self.sample_rate <= 1,
                f"sample_rate must be in (0, 1], got {self.sample_rate}",
                "e.g. 0.1 (Partial FC), or 1 for every class",
            ),
            (
                self.feature_dim is None or self.feature_dim >= 1,
                f"feature_dim must be >= 1, got {self.feature_dim}",
                "e.g. 512",
            ),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise ConfigError(message, hint)
        check_device(self.device)
        for name, value, choices in (
            ("sampler", self.sampler, Sampler),
            ("amp_dtype", self.amp_dtype, AmpDtype),
            ("split", self.split, Split),
        ):
            valid: tuple[str, ...] = get_args(choices)
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r}", f"valid: {', '.join(valid)}")
        self._check_margin()

    def _check_margin(self) -> None:
        given = self.margin.given()
        if not given:
            return
        if self.head == "softmax":
            text = ", ".join(f"head_{k}={v:g}" for k, v in given.items())
            raise ConfigError(
                f"head 'softmax' has no margin parameters, got {text}",
                "drop them, or choose a margin head: " + ", ".join(HEAD_PRESETS),
            )
        if self.head in HEAD_PRESETS:
            try:
                self.margin.apply(HEAD_PRESETS[self.head])
            except ValueError as e:
                raise ConfigError(f"invalid margin for head {self.head!r}: {e}") from None

    def milestones(self) -> list[int]:
        """The steps at which the lr drops (the fractions of ``lr_drops`` rounded)."""
        return sorted(round(f * self.steps) for f in self.lr_drops)


@dataclass(frozen=True)
class ToyConfig:
    """Options of ``facecl toy mnist`` on top of its ``TrainConfig`` (stored beside it)."""

    data: str = ""
    """MNIST directory (t10k idx gz + ``mnist_train_approx_from_tsuga_png.npz``); empty =
    ../shared/data/mnist when present, else the bundled tests/data/mnist_small.npz."""

    imbalance: bool = False
    """Wu 2018 Sec. 3.1: cut ``imbalance_classes`` to ``imbalance_keep`` training samples."""

    imbalance_keep: int = 200
    """Samples kept per reduced class (Wu 2018: 200, 500, 1000)."""

    imbalance_classes: tuple[int, ...] = (0, 1, 2, 3, 4)
    """The five reduced classes (Wu 2018 cuts five of ten; which five is not stated)."""

    plot_points: int = 5_000
    """Most feature points drawn per panel (a seeded subset; the train features and the
    train accuracy are computed on that subset only, the test accuracy on the full set)."""

    def __post_init__(self) -> None:
        if self.imbalance_keep < 1:
            raise ConfigError("imbalance_keep must be >= 1", "e.g. 200")
        if any(not 0 <= c <= 9 for c in self.imbalance_classes):
            raise ConfigError("imbalance_classes must be digits 0-9", "e.g. [0, 1, 2, 3, 4]")


# The toy's own defaults (paper-scale runs are far too long for a CPU): LeNet++ on MNIST,
# SGD lr 0.01 (0.05 diverges: LeNet++ has no batch norm), batch 32, 2000 steps (about one
# epoch of the 60k training images), lambda 0.01.
TOY_TRAIN_DEFAULTS: dict[str, Any] = {
    "arch": "lenetpp",
    "feature_dim": 2,
    "lr": 0.01,
    "lam": 0.01,
    "batch_size": 32,
    "steps": 2000,
    "flip": False,
    "workers": 0,
    "checkpoint_every": 500,
    "log_every": 25,
}


# Named schedules (``--preset NAME``): a layer between the defaults and the config file /
# CLI options, which still win. ``eccv2016`` is the defaults spelled out.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # ECCV 2016 Sec. 4.1-4.2: batch 256, lr 0.1 / 10 at 16K and 24K of 28K, lambda 0.003.
    "eccv2016": {
        "batch_size": 256,
        "steps": 28_000,
        "lr": 0.1,
        "lr_drops": (16 / 28, 24 / 28),
        "lam": 0.003,
    },
    # IJCV 2019 Sec. 4.1: batch 128, lr 0.1 / 10 at 25K and 38K of 45K; lambda 0.01 (Sec.
    # 4.2 fixes it for the study).
    "ijcv2019": {
        "batch_size": 128,
        "steps": 45_000,
        "lr": 0.1,
        "lr_drops": (25 / 45, 38 / 45),
        "lam": 0.01,
    },
}

# ``facecl toy mnist --preset NAME``: (TrainConfig layer over TOY_TRAIN_DEFAULTS, ToyConfig).
TOY_PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Wu 2018 Sec. 4.2 as its caffe-face mnist_example runs it: Wu's LeNet++ (pool3 3x3/2,
    # PReLU on the 2-d feature), a bias-free softmax classifier, softmax + gamma L_I (Eq. 5:
    # lambda 0, gamma = the layer's loss_weight 1e-5, num_data from label.num), batch 128,
    # lr 0.01 x 0.8 at 5K and 8K of 10K; the centers move by SGD (lr 0.01, momentum 0.9),
    # an effective alpha ~0.1; label.num keeps 100 images of digits 0-4.
    "wu2018": (
        {
            "arch": "lenetpp-wu",
            "head": "softmax",
            "head_bias": False,
            "loss": "cil",
            "lam": 0.0,
            "gamma": 1e-5,
            "alpha": 0.1,
            "batch_size": 128,
            "lr": 0.01,
            "lr_factor": 0.8,
            "lr_drops": (0.5, 0.8),
            "steps": 10_000,
            "checkpoint_every": 1000,
            "log_every": 100,
        },
        {"imbalance_keep": 100},
    ),
}


def preset_layer(name: str | None, presets: Mapping[str, Any], what: str = "preset") -> Any:
    """The layer of preset ``name`` (None: no preset), or a ConfigError listing the names."""
    if not name:
        return None
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown {what} {name!r}", f"{hint}valid: {', '.join(presets)}")
    return presets[name]


# --------------------------------------------------------------------------- merging


def field_names(cls: type = TrainConfig) -> list[str]:
    return [f.name for f in fields(cls)]


def nested_fields(cls: type = TrainConfig) -> dict[str, tuple[type, str]]:
    """The nested dataclass fields of ``cls``: name -> (their class, their ``cli_prefix``)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, str]] = {}
    for f in fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = (hints[f.name], str(f.metadata.get("cli_prefix", f"{f.name}-")))
    return out


def flat_keys(cls: type = TrainConfig) -> dict[str, tuple[str, str]]:
    """Flat spellings of the nested fields: ``alpha`` -> ``("center", "alpha")``,
    ``head_s`` -> ``("margin", "s")`` (the ``cli_prefix`` + the field name)."""
    out: dict[str, tuple[str, str]] = {}
    for name, (sub, prefix) in nested_fields(cls).items():
        for f in fields(sub):
            out[(prefix + f.name).replace("-", "_")] = (name, f.name)
    return out


def canonical_key(key: str, cls: type = TrainConfig, where: str = "") -> str:
    """Map a user key (``batch-size``, ``lambda``) to a field name, a nested one to
    ``group.field`` (``alpha`` -> ``center.alpha``, ``head-s`` -> ``margin.s``), or fail with
    the closest valid spelling."""
    valid = field_names(cls)
    aliases = {a: t for a, t in ALIASES.items() if t in valid}
    k = aliases.get(key, key.replace("-", "_"))
    if k in valid:
        return k
    flat = flat_keys(cls)
    if k in flat:
        return ".".join(flat[k])
    group, _, sub = k.partition(".")
    nested = nested_fields(cls)
    if group in nested and sub in field_names(nested[group][0]):
        return k
    spellings = valid + list(aliases) + list(flat)
    close = difflib.get_close_matches(key.replace("-", "_"), spellings, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        f"unknown config key {key!r}{where}", f"{hint}valid keys: {', '.join(sorted(spellings))}"
    )


def _coerce(name: str, value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field's type; int -> float and list -> tuple are allowed."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"config key {name!r}{where} must be a list, got {type(value).__name__} {value!r}",
                "e.g. [0.57, 0.86]",
            )
        return tuple(_coerce(name, v, args[0], where) for v in value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"unknown {name} {value!r}{where}", f"valid: {', '.join(map(str, args))}"
            )
        return value
    ok = False
    if annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif annotation is str:
        ok = isinstance(value, str)
    if not ok:
        want = getattr(annotation, "__name__", str(annotation))
        raise ConfigError(
            f"config key {name!r}{where} must be {want}, got {type(value).__name__} {value!r}",
            "fix the value in the config file or on the command line",
        )
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML) file as a dict.

    A ``[train]`` table (TOML) or ``train:`` mapping (YAML) is used when the file has one, so
    a study config can hold several stages.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}", "pass an existing .toml or .yaml file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib

            with open(p, "rb") as f:
                data = tomllib.load(f)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"cannot read {p}: PyYAML is not installed", "pip install pyyaml, or use TOML"
                ) from None
            data = yaml.safe_load(p.read_text()) or {}
        elif suffix == ".json":
            data = json.loads(p.read_text())
        else:
            raise ConfigError(f"unknown config format {p.suffix!r}", "use .toml, .yaml or .json")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - tomllib/yaml/json parse errors
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"cannot parse {p}: {first}", "fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a table of keys", "e.g. steps = 1000")
    if isinstance(data.get("train"), dict):
        data = data["train"]
    return data


def _layer_items(
    layer: Mapping[str, Any], cls: type, where: str, skip_none: bool
) -> Iterator[tuple[str, Any, str]]:
    """(canonical key, value, where) of one layer; a nested table yields ``group.field`` keys."""
    nested = nested_fields(cls)
    for key, value in layer.items():
        if skip_none and value is None:
            continue
        name = canonical_key(key, cls, where)
        if name not in nested:
            yield name, value, where
            continue
        sub_cls = nested[name][0]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"config key {key!r}{where} must be a table of {', '.join(field_names(sub_cls))}",
                f"e.g. [train.{name}] with {field_names(sub_cls)[0]} = ...",
            )
        sub_where = f" in [{name}]{where}"
        for sub_key, sub_value in value.items():
            if not (skip_none and sub_value is None):
                yield f"{name}.{canonical_key(sub_key, sub_cls, sub_where)}", sub_value, sub_where


def merge_config(
    cls: type,
    base: Mapping[str, Any] | None = None,
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "",
) -> Any:
    """``cls`` built from defaults <- ``base`` <- ``file_values`` <- ``overrides``.

    Every layer may give a nested group as a table (``{"center": {"alpha": 0.5}}``) or as
    flat keys (``{"alpha": 0.5}``); later layers win per field. Values of None in
    ``overrides`` mean "not given" (CLI options that were not passed).
    """
    nested = nested_fields(cls)
    values: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {name: {} for name in nested}
    layers = [
        (base or {}, "", False),
        (file_values or {}, f" in {source}" if source else "", False),
        (overrides or {}, "", True),
    ]
    for layer, where, skip_none in layers:
        for name, value, at in _layer_items(layer, cls, where, skip_none):
            group, _, sub = name.partition(".")
            if sub:
                hint = typing.get_type_hints(nested[group][0])[sub]
                groups[group][sub] = _coerce(sub, value, hint, at)
            else:
                values[name] = _coerce(name, value, typing.get_type_hints(cls)[name], at)
    for group, given in groups.items():
        try:
            values[group] = nested[group][0](**given)
        except ValueError as e:
            hint = "fix the value in the config file or on the command line"
            raise ConfigError(str(e), hint) from None
    return cls(**values)


def flat_options(options: Mapping[str, Any], cls: type = TrainConfig) -> dict[str, Any]:
    """``options`` with every nested table spelled as flat keys (``{"center": {"alpha": 0.5},
    "margin": {"s": 30}}`` -> ``{"alpha": 0.5, "head_s": 30}``), e.g. to pass them as CLI
    options; other keys are kept as they are."""
    nested = nested_fields(cls)
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name in nested and isinstance(value, Mapping):
            prefix = nested[name][1]
            out.update({(prefix + k).replace("-", "_"): v for k, v in value.items()})
        else:
            out[key] = value
    return out


def load_train_config(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The run's ``TrainConfig``: defaults, ``base``, the file, then CLI ``overrides``."""
    file_values = read_config_file(config_file) if config_file else {}
    return merge_config(TrainConfig, base, file_values, overrides, source=str(config_file or ""))


def config_from_dict(data: Mapping[str, Any], cls: type = TrainConfig) -> Any:
    """Rebuild a config from its manifest/checkpoint dict (lists back to tuples)."""
    return merge_config(cls, None, None, dict(data))


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)
