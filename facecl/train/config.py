"""The one home of `facecl train` defaults, and the config-file reader.

``TrainConfig`` holds every option of a training run; each CLI option maps to one field.
A run is configured by, in increasing priority: these defaults, a TOML or YAML file
(``--config FILE``), then the CLI options given explicitly. Keys are the field names, with
``-`` accepted for ``_`` and ``lambda`` for ``lam``; an unknown key fails with the closest
valid name. ``ToyConfig`` holds the extra options of ``facecl toy mnist``.

Paper defaults (ECCV 2016 Sec. 4.1, IJCV 2019 Sec. 5.1, Wu 2018 Sec. 4.1): SGD with momentum
0.9 and weight decay 5e-4, lr 0.1 divided by 10 at 16K and 24K of 28K iterations, batch 256,
center-loss weight lambda 0.003 and center rate alpha 0.5 (ECCV Sec. 4.2 picks lambda 0.003
and alpha 0.5 from Fig. 5; IJCV fixes lambda 0.01 for its study). The learning-rate drops are
kept as fractions of the run (16/28 and 24/28) so a short run follows the same shape.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from facecl.errors import ConfigError

SAMPLERS = ("uniform", "balanced")
DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("bfloat16", "float16")
SPLITS = ("train", "all")

# Config-file / override spellings that are not field names.
ALIASES = {"lambda": "lam"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Stored as the manifest's ``config``."""

    # ---- model and losses
    arch: str = "sphere20"
    """Backbone registry name (``facecl.models``): sphere4/10/20/36/64, lenetpp, tiny."""

    feature_dim: int | None = None
    """Feature (FC1) dimension; None = the backbone's default (512 for sphere nets)."""

    head: str = "softmax"
    """Classification head (``facecl.losses`` HEADS): softmax, sphereface, cosface, arcface."""

    loss: str = "cl"
    """Center loss (``facecl.losses`` CENTER_LOSSES): none, cl, acl, acl-gamma, cil."""

    lam: float = 0.003
    """lambda, the weight of the center term (ECCV Eq. 5; CLI ``--lambda``). ECCV Sec. 4.2:
    0.003; IJCV Sec. 5.2 uses 0.01. Ignored with ``loss = none``."""

    alpha: float = 0.5
    """Center learning rate of ECCV Alg. 1 (c_j <- c_j - alpha Delta c_j), in [0, 1]."""

    rho: float = 0.0
    """Radius of the generalized center (IJCV Eq. 9-10); 0 = plain center."""

    gamma: float = 1e-3
    """Weight of the center invariant term of ``cil`` (Wu 2018 Eq. 9; not times lambda)."""

    # ---- optimiser and schedule
    lr: float = 0.1
    """Initial SGD learning rate (ECCV / IJCV / Wu: 0.1)."""

    momentum: float = 0.9
    weight_decay: float = 5e-4
    """L2 weight decay on weights and PReLU slopes; biases get none (caffe decay_mult 0)."""

    lr_drops: tuple[float, ...] = (16 / 28, 24 / 28)
    """Fractions of ``steps`` at which the lr is multiplied by ``lr_factor`` (ECCV: 16K and
    24K of 28K iterations)."""

    lr_factor: float = 0.1
    """Multiplier applied at each drop ("divided by 10")."""

    batch_size: int = 256
    """Global mini-batch (split evenly across DDP processes). ECCV: 256, IJCV: 128."""

    steps: int = 28_000
    """Number of SGD iterations (ECCV: 28K)."""

    seed: int = 0
    """Seeds initialisation, data order and flips: same seed -> same weights on CPU."""

    # ---- data
    split: str = "train"
    """Pack split to train on: ``train`` or ``all`` (train + val)."""

    sampler: str = "uniform"
    """``uniform``: a seeded permutation per epoch; ``balanced``: every class equally often
    in expectation (with replacement)."""

    flip: bool = True
    """Random horizontal flips (p = 0.5, ECCV Sec. 4.1), drawn from (seed, step)."""

    workers: int = 2
    """DataLoader worker processes (0 = load in the training process)."""

    # ---- runtime
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""

    threads: int = 0
    """CPU threads for torch (``torch.set_num_threads``); 0 = torch's default (all cores;
    under ``--ddp N`` the cores split between the processes)."""

    amp: bool = True
    """Mixed precision on CUDA (autocast; the losses always run in float32). No effect on CPU."""

    amp_dtype: str = "bfloat16"
    """Autocast dtype on CUDA: ``bfloat16`` or ``float16`` (with loss scaling)."""

    checkpoint_every: int = 1000
    """Steps between checkpoints (``checkpoints/last.pt``); one is also written at the end."""

    log_every: int = 20
    """Steps between ``metrics.jsonl`` records and progress updates."""

    def __post_init__(self) -> None:
        checks = [
            (self.lam >= 0, f"lambda must be >= 0, got {self.lam}", "e.g. 0.003"),
            (0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}", "e.g. 0.5"),
            (self.rho >= 0, f"rho must be >= 0, got {self.rho}", "e.g. 0 or 5"),
            (self.gamma >= 0, f"gamma must be >= 0, got {self.gamma}", "e.g. 0.001"),
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
                self.feature_dim is None or self.feature_dim >= 1,
                f"feature_dim must be >= 1, got {self.feature_dim}",
                "e.g. 512",
            ),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise ConfigError(message, hint)
        for name, value, valid in (
            ("sampler", self.sampler, SAMPLERS),
            ("device", self.device, DEVICES),
            ("amp_dtype", self.amp_dtype, AMP_DTYPES),
            ("split", self.split, SPLITS),
        ):
            if value not in valid:
                raise ConfigError(f"unknown {name} {value!r}", f"valid: {', '.join(valid)}")

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


# --------------------------------------------------------------------------- merging


def field_names(cls: type = TrainConfig) -> list[str]:
    return [f.name for f in fields(cls)]


def canonical_key(key: str, cls: type = TrainConfig, where: str = "") -> str:
    """Map a user key (``batch-size``, ``lambda``) to a field name, or fail with a suggestion."""
    k = ALIASES.get(key, key.replace("-", "_"))
    valid = field_names(cls)
    if k in valid:
        return k
    spellings = valid + list(ALIASES)
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
            import tomllib

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


def merge_config(
    cls: type,
    base: Mapping[str, Any] | None = None,
    file_values: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "",
) -> Any:
    """``cls`` built from defaults <- ``base`` <- ``file_values`` <- ``overrides``.

    Values of None in ``overrides`` mean "not given" (CLI options that were not passed).
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    layers = [(base or {}, ""), (file_values or {}, f" in {source}" if source else "")]
    layers.append(({k: v for k, v in (overrides or {}).items() if v is not None}, ""))
    for layer, where in layers:
        for key, value in layer.items():
            name = canonical_key(key, cls, where)
            values[name] = _coerce(name, value, hints[name], where)
    return cls(**values)


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
