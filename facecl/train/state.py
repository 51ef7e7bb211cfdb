"""The training state (network, center loss, optimiser) and its checkpoint payload.

``build_state`` makes a fresh state from a ``TrainConfig`` (seeded); ``checkpoint_payload``
turns a state into the dict ``facecl.train.checkpoint.save_checkpoint`` writes (the layout is
documented there) and ``restore`` loads a full checkpoint back into a state built by the same
config, for a resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from facecl.artifacts import config_dict
from facecl.errors import CheckpointError, ConfigError, FaceclError, InputError
from facecl.models.input_spec import InputSpec
from facecl.train.checkpoint import checkpoint_input_spec, load_checkpoint
from facecl.train.config import TrainConfig, config_from_dict

if TYPE_CHECKING:
    from facecl.losses.center import CenterLossBase
    from facecl.losses.distributed import ClassRange


class FaceNet(nn.Module):
    """Backbone + classification head as one module (what DDP wraps)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone(images)  # (B, D)
        return feats, self.head(feats, labels)  # (B, D), (B, C)


@dataclass
class TrainState:
    """Everything that changes during training (and goes into a checkpoint), with what the
    checkpoint needs to rebuild the model (``arch_kwargs``, ``input_spec``)."""

    net: FaceNet
    center: CenterLossBase
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    arch_kwargs: dict[str, Any]
    num_classes: int
    step: int = 0
    input_spec: InputSpec | None = None  # None: derived from the backbone's input size
    shard: ClassRange | None = None
    """``--shard-classes``: the classes this rank's head and center loss hold (None: all)."""


def validate_names(cfg: TrainConfig) -> None:
    """Fail early (UnknownNameError listing the valid names) on a wrong arch/head/loss or
    augmentation name."""
    from facecl.losses import CENTER_LOSSES, HEADS
    from facecl.models import BACKBONES, list_backbones

    list_backbones()  # loads the built-in backbones
    BACKBONES.get(cfg.arch)
    HEADS.get(cfg.head)
    CENTER_LOSSES.get(cfg.loss)
    if cfg.augment:
        from facecl.pack.dataset import build_augment

        build_augment(list(cfg.augment))


def dataset_input_spec(dataset: Any, arch_kwargs: Mapping[str, Any]) -> InputSpec:
    """The geometry and normalisation of the training crops: the dataset's ``input_spec``
    (an ``InputSpec`` or its dict) when it has one, else derived from its image size."""
    spec = getattr(dataset, "input_spec", None)
    h, w = (int(s) for s in dataset.image_size)
    if spec is None:
        return checkpoint_input_spec({"input_size": [h, w], "arch_kwargs": dict(arch_kwargs)})
    if isinstance(spec, Mapping):
        spec = InputSpec.from_dict(spec)
    if not isinstance(spec, InputSpec) or tuple(spec.size) != (h, w):
        raise InputError(
            f"the dataset's input_spec {spec!r} does not match its {h}x{w} images",
            "re-run 'facecl pack'",
        )
    return spec


def dataset_class_counts(dataset: Any, num_classes: int) -> Any:
    """The training set's images per class (C,): the dataset's ``class_counts`` (a pack's
    ``classes.json`` counts of its split), else counted from its ``labels``, else None."""
    counts = getattr(dataset, "class_counts", None)
    if counts is None and getattr(dataset, "labels", None) is not None:
        counts = np.bincount(np.asarray(dataset.labels, np.int64), minlength=num_classes)
    return counts


def head_options(cfg: TrainConfig) -> dict[str, Any]:
    """``create_head`` keyword options of a run: the margin over the preset, or the softmax
    head's bias switch."""
    if cfg.head == "softmax":
        return {} if cfg.head_bias else {"bias": False}
    return cfg.margin.given()


def build_state(
    cfg: TrainConfig,
    num_classes: int,
    arch_kwargs: dict[str, Any],
    device: torch.device,
    input_spec: InputSpec | None = None,
    class_counts: Any = None,
    shard: ClassRange | None = None,
) -> TrainState:
    """Backbone, head, center loss and optimiser, initialised from ``cfg.seed``.
    ``class_counts``: the training set's images per class (``cil`` needs them). ``shard``:
    build only these classes' head rows and centers (``--shard-classes``), drawn as the
    same rows of one process's (``facecl.losses.shard_init``)."""
    from facecl.losses import create_center_loss, create_head
    from facecl.models import create_backbone

    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.arch, **arch_kwargs)
    dim = int(backbone.feature_dim)
    if shard is None:
        head = create_head(cfg.head, dim, num_classes, **head_options(cfg))
        center = create_center_loss(
            cfg.loss, num_classes, dim, config=cfg.center, class_counts=class_counts
        )
    else:
        from facecl.losses.shard_init import shard_center_loss, shard_head

        head = shard_head(cfg.head, dim, shard, **head_options(cfg))
        center = shard_center_loss(cfg.loss, dim, shard, cfg.center, class_counts)
    net = FaceNet(backbone, head).to(device)
    center = center.to(device)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in net.named_parameters():
        (no_decay if name.endswith("bias") else decay).append(p)
    optimizer = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
    )
    scaler = None
    if device.type == "cuda" and cfg.amp and cfg.amp_dtype == "float16":
        scaler = torch.amp.GradScaler("cuda")
    return TrainState(
        net,
        center,
        optimizer,
        scaler,
        dict(arch_kwargs),
        num_classes,
        input_spec=input_spec,
        shard=shard,
    )


def checkpoint_payload(
    state: TrainState,
    cfg: TrainConfig,
    *,
    step: int,
    with_optimizer: bool,
    info: dict[str, Any],
    window: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint of ``state`` at ``step``: weights, head, centers, config, input spec;
    with the optimiser, scaler and RNG state (and the partial metrics ``window`` payload) for
    a full, resumable one. A class-sharded state's payload holds this rank's rows of the head,
    centers and momentum (``facecl.train.last.save_sharded`` writes them per rank); without
    the optimiser (``model.pt``) it holds no head and no centers at all: the backbone only."""
    backbone: Any = state.net.backbone  # a facecl.models backbone (feature_dim, input_size)
    spec = state.input_spec or checkpoint_input_spec(
        {"input_size": list(backbone.input_size), "arch_kwargs": state.arch_kwargs}
    )
    payload = {
        "arch": cfg.arch,
        "arch_kwargs": state.arch_kwargs,
        "feature_dim": int(backbone.feature_dim),
        "input_size": list(backbone.input_size),
        "input_spec": spec.to_dict(),
        "loss": cfg.loss,
        "head": cfg.head,
        "num_classes": state.num_classes,
        "config": config_dict(cfg),
        "model": backbone.state_dict(),
        "step": int(step),
        **info,
    }
    payload.update(_class_states(state, with_optimizer))
    if with_optimizer:
        payload["scaler"] = state.scaler.state_dict() if state.scaler is not None else {}
        payload["rng"] = {"torch": torch.get_rng_state()}
        payload.update(window or {})  # the partial metrics window: a resumed run logs the same
    return payload


def _class_states(state: TrainState, with_optimizer: bool) -> dict[str, Any]:
    """``head_state``, ``loss_state`` and ``optimizer`` (``{}`` without) of the payload."""
    if state.shard is not None and not with_optimizer:  # a sharded run's model.pt
        return {"head_state": {}, "loss_state": {}, "optimizer": {}}
    out = {"head_state": state.net.head.state_dict(), "loss_state": state.center.state_dict()}
    out["optimizer"] = state.optimizer.state_dict() if with_optimizer else {}
    return out


def _same_config(recorded: Any, cfg: TrainConfig) -> bool:
    """Whether a checkpoint's ``config`` dict (nested, or flat from before the nesting)
    describes ``cfg``."""
    if not isinstance(recorded, Mapping):
        return False
    from facecl.artifacts import config_dict, runtime_fields, without_runtime

    try:
        then = config_dict(config_from_dict(recorded))
    except FaceclError:
        return False
    runtime = runtime_fields(TrainConfig)  # workers, threads, device may change on resume
    return without_runtime(then, runtime) == without_runtime(config_dict(cfg), runtime)


def restore(state: TrainState, ckpt: dict[str, Any], cfg: TrainConfig) -> int:
    """Load a checkpoint written by this run's config into ``state``; returns its step."""
    if not _same_config(ckpt.get("config"), cfg):
        raise ConfigError(
            "the checkpoint in the run directory was written with another config",
            "use --force to start the run afresh",
        )
    rows = ckpt.get("class_rows")  # set by facecl.train.last.load_last: the rows it holds
    if rows is not None and state.shard is not None:
        if list(rows) != [state.shard.lo, state.shard.hi]:
            raise CheckpointError(f"checkpoint rows {rows} are not this rank's", "a bug")
    elif state.shard is not None:  # this rank's rows of last.pt's full head, centers, momentum
        from facecl.train.last import slice_rows

        ckpt = slice_rows(ckpt, state)
    state.net.backbone.load_state_dict(ckpt["model"])
    state.net.head.load_state_dict(ckpt["head_state"])
    state.center.load_state_dict(ckpt["loss_state"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    if "rng" in ckpt:
        torch.set_rng_state(cpu_rng_state(ckpt["rng"]["torch"]))
    return int(ckpt["step"])


def cpu_rng_state(saved: Any) -> torch.Tensor:
    """The saved CPU generator state as the CPU ``ByteTensor`` ``torch.set_rng_state`` takes,
    wherever ``map_location`` put it (a checkpoint mapped to ``cuda`` moves it to the GPU)."""
    state = torch.as_tensor(saved)
    if state.is_meta:
        raise CheckpointError(
            "the checkpoint's RNG state was loaded on the meta device (no data)",
            "load the checkpoint with map_location='cpu'",
        )
    return state.detach().to(device="cpu", dtype=torch.uint8).contiguous()


def resume_from(state: TrainState, path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Load the full checkpoint ``path`` into ``state`` (built by ``cfg``, on any device) and
    return it (``state.step`` set). It is read on the CPU: ``load_state_dict`` copies the
    weights onto the state's device, and the CPU generator state stays a CPU tensor."""
    ckpt = load_checkpoint(path, map_location="cpu")
    state.step = restore(state, ckpt, cfg)
    return ckpt
