"""``facecl toy mnist``: LeNet++ with 2-d features on MNIST, as ECCV Fig. 3 / IJCV Fig. 5.

Data: ``--data DIR``, else ``$FACECL_SHARED/data/mnist`` (default ``../shared`` from the
working directory), holding ``t10k-*-idx*-ubyte.gz`` for the test set and
``mnist_train_approx_from_tsuga_png.npz`` with ``x_train``/``y_train`` for the training set;
else the subset of both shipped with the package (``facecl/data/mnist_small.npz``).
``--imbalance`` reproduces Wu 2018 Sec. 3.1: five of the ten classes keep only 200 training
samples (a seeded choice), the rest keep all of theirs.

The output is a ``train`` run artifact (same layout as ``facecl train``: model.pt,
checkpoints, metrics.jsonl, training_curve.png) plus ``features.png`` (train and test
features with the centers), ``features.npz`` and the test accuracy in the manifest.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facecl.artifacts import StageOutput, input_ref, sha256_file
from facecl.errors import InputError
from facecl.models.input_spec import InputSpec
from facecl.train.config import ToyConfig, TrainConfig, config_from_dict
from facecl.train.loop import StopFlag
from facecl.train.run import MODEL
from facecl.train.stage import TrainResult, finalize, fit, stop_on_signals

# The shared datasets: $FACECL_SHARED, else ../shared from where the command runs (a checkout).
SHARED_MNIST = Path(os.environ.get("FACECL_SHARED", "../shared")).resolve() / "data" / "mnist"
# Package data: a seeded subset (300 train / 100 test images per digit), see facecl/data.
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "mnist_small.npz"
TRAIN_NPZ = "mnist_train_approx_from_tsuga_png.npz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FIGURE = "features.png"
FEATURES = "features.npz"


@dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, 28, 28) uint8
    y_test: np.ndarray  # (M,) int64
    files: tuple[Path, ...]  # what was read (the run's inputs)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain): magic 0x0000 08 ndim, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise InputError(f"{path} is not a uint8 IDX file", "pass the original MNIST files")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputError(f"{path} is truncated", "re-download the MNIST files")
    return body.reshape(dims).copy()  # writable (torch.from_numpy)


def load_mnist(data: str | os.PathLike | None = None) -> Mnist:
    """MNIST from ``data`` (a directory), else the shared MNIST, else the packaged subset."""
    d = Path(data) if data else SHARED_MNIST
    if (d / TRAIN_NPZ).is_file() and (d / TEST_IMAGES).is_file():
        with np.load(d / TRAIN_NPZ) as z:
            x_train, y_train = z["x_train"], z["y_train"].astype(np.int64)
        x_test = read_idx(d / TEST_IMAGES)
        y_test = read_idx(d / TEST_LABELS).astype(np.int64)
        files: tuple[Path, ...] = (d / TRAIN_NPZ, d / TEST_IMAGES, d / TEST_LABELS)
    elif data:
        raise InputError(
            f"no MNIST at {d} (need {TRAIN_NPZ} and {TEST_IMAGES}, {TEST_LABELS})",
            "pass --data DIR holding them, or omit --data to use the bundled subset",
        )
    elif BUNDLED.is_file():
        with np.load(BUNDLED) as z:
            x_train, y_train = z["x_train"], z["y_train"].astype(np.int64)
            x_test, y_test = z["x_test"], z["y_test"].astype(np.int64)
        files = (BUNDLED,)
    else:
        raise InputError(
            f"MNIST not found at {d} and the packaged subset {BUNDLED} is missing",
            "pass --data DIR with the MNIST files, or reinstall facecl",
        )
    return Mnist(x_train, y_train, x_test, y_test, files)


def imbalance_indices(
    labels: np.ndarray, classes: tuple[int, ...], keep: int, seed: int
) -> np.ndarray:
    """Indices kept when each class in ``classes`` is cut to ``keep`` samples (seeded)."""
    rng = np.random.default_rng(seed)
    kept = []
    for c in range(int(labels.max()) + 1):
        idx = np.flatnonzero(labels == c)
        if c in classes and idx.size > keep:
            idx = np.sort(rng.choice(idx, keep, replace=False))
        kept.append(idx)
    return np.sort(np.concatenate(kept))


class ArrayDataset(torch.utils.data.Dataset):
    """In-memory uint8 grey images (N, H, W) as (1, H, W) float, normalised as ``input_spec``
    says (``(x - MEAN) / SCALE``, ``facecl.models.input_spec``), and labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int = 10):
        self.images = torch.from_numpy(np.ascontiguousarray(images))  # (N, H, W) uint8
        self.labels = np.asarray(labels, np.int64)
        self._labels = torch.from_numpy(self.labels)
        self.num_classes = num_classes
        self.class_counts = np.bincount(self.labels, minlength=num_classes)  # (C,) N_j
        self.image_size = (int(images.shape[1]), int(images.shape[2]))
        self.input_spec = InputSpec(size=self.image_size, channels=1, color="L")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float().unsqueeze(-3) - self.input_spec.mean) / self.input_spec.scale

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self._norm(self.images[i]), int(self.labels[i])

    def get_batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._norm(self.images[idx]), self._labels[idx]  # (B, 1, H, W), (B,)

    def all_images(self) -> torch.Tensor:
        return self._norm(self.images)  # (N, 1, H, W)


def load_run(path: Path) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(backbone, head, center loss, checkpoint) of a finished run's ``model.pt``."""
    from facecl.losses import create_head, restore_center_loss
    from facecl.train.checkpoint import build_backbone, load_checkpoint
    from facecl.train.state import head_options

    ckpt = load_checkpoint(path)
    backbone = build_backbone(ckpt)
    cfg = config_from_dict(ckpt["config"])  # nested, or flat from a version 1 checkpoint
    dim, classes = ckpt["feature_dim"], ckpt["num_classes"]
    head = create_head(ckpt["head"], dim, classes, **head_options(cfg))
    head.load_state_dict(ckpt["head_state"])
    center = restore_center_loss(ckpt["loss"], classes, dim, cfg.center, ckpt["loss_state"])
    return backbone, head.eval(), center, ckpt


def evaluate(
    backbone: Any, head: Any, ds: ArrayDataset, batch: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) and predicted classes (N,) (argmax of the head's eval logits)."""
    from facecl.train.loop import feature_batches

    feats = feature_batches(backbone, ds.all_images(), batch)  # (N, D)
    with torch.no_grad():
        pred = head.eval()(feats).argmax(1).numpy()
    return feats.numpy(), pred


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, classes: int = 10) -> list[float]:
    return [
        float((pred[labels == c] == c).mean()) if (labels == c).any() else float("nan")
        for c in range(classes)
    ]


def _title(cfg: TrainConfig, toy: ToyConfig) -> str:
    variant = f"{cfg.head} + {cfg.loss}" if cfg.loss != "none" else cfg.head
    title = f"LeNet++ MNIST: {variant}"
    if cfg.loss != "none":
        c = cfg.center
        title += f" (lambda {cfg.lam:g}, alpha {c.alpha:g}, rho {c.rho:g}"
        title += f", gamma {c.gamma:g})" if cfg.loss == "cil" else ")"
    if toy.imbalance:
        title += f"; classes {list(toy.imbalance_classes)} cut to {toy.imbalance_keep}"
    return title


def _features_and_figure(
    work: Path, cfg: TrainConfig, toy: ToyConfig, train_ds: ArrayDataset, test_ds: ArrayDataset
) -> dict[str, Any]:
    """The trained model's features of a seeded train subset and of the test set, written to
    ``features.npz`` and drawn with the centers in ``features.png``; returns the accuracies."""
    from facecl.train.plots import feature_scatter

    backbone, head, center, _ = load_run(work / MODEL)
    rng = np.random.default_rng(cfg.seed)
    sub = np.arange(len(train_ds))
    if len(sub) > toy.plot_points:  # train features of a seeded subset (CPU time)
        sub = np.sort(rng.choice(sub, toy.plot_points, replace=False))
    train_sub = ArrayDataset(train_ds.images.numpy()[sub], train_ds.labels[sub])
    train_feats, train_pred = evaluate(backbone, head, train_sub)
    test_feats, test_pred = evaluate(backbone, head, test_ds)
    train_acc = float((train_pred == train_sub.labels).mean())
    test_acc = float((test_pred == test_ds.labels).mean())
    centers = None
    if cfg.loss != "none":
        with torch.no_grad():
            centers = center.all_centers(head).float().numpy()  # (C, D)
    np.savez_compressed(
        work / FEATURES,
        train_features=train_feats,
        train_labels=train_sub.labels,
        test_features=test_feats,
        test_labels=test_ds.labels,
        centers=centers if centers is not None else np.zeros((0, train_feats.shape[1])),
    )
    panels = []
    for name, feats, labels, acc in (
        ("train", train_feats, train_sub.labels, train_acc),
        ("test", test_feats, test_ds.labels, test_acc),
    ):
        sel = np.arange(len(labels))
        if len(sel) > toy.plot_points:
            sel = np.sort(rng.choice(sel, toy.plot_points, replace=False))
        panels.append((f"{name} ({100 * acc:.2f}% acc.)", feats[sel], labels[sel]))
    feature_scatter(panels, centers, work / FIGURE, title=_title(cfg, toy))
    return {
        "test_accuracy": test_acc,
        "test_accuracy_per_class": per_class_accuracy(test_pred, test_ds.labels),
        "train_accuracy": train_acc,
        "train_accuracy_on": int(len(train_sub)),
    }


def run_toy(
    cfg: TrainConfig,
    toy: ToyConfig,
    out: str | os.PathLike,
    *,
    force: bool = False,
    show_progress: bool = True,
) -> TrainResult:
    """Train LeNet++ on MNIST into ``out``, then plot and evaluate (see the module docstring)."""
    from facecl.artifacts import atomic_write_json

    mnist = load_mnist(toy.data or None)
    config = {"train": cfg, "toy": toy}
    so = StageOutput(out, "train", config, [input_ref(f) for f in mnist.files], force=force)
    if so.up_to_date:
        m = so.existing
        assert m is not None  # up_to_date means a complete manifest was read
        return TrainResult(so.path, m, up_to_date=True, summary=dict(m.extra.get("toy", {})))
    x_train, y_train = mnist.x_train, mnist.y_train
    if toy.imbalance:
        keep = imbalance_indices(y_train, toy.imbalance_classes, toy.imbalance_keep, cfg.seed)
        x_train, y_train = x_train[keep], y_train[keep]
    train_ds = ArrayDataset(x_train, y_train)
    test_ds = ArrayDataset(mnist.x_test, mnist.y_test)

    work = so.begin()
    stop = StopFlag()
    with stop_on_signals(stop):
        summary = fit(
            cfg,
            train_ds,
            work,
            arch_kwargs={"in_channels": 1},
            info={"dataset": "mnist", "imbalance": toy.imbalance},
            show_progress=show_progress,
            stop=stop,
        )

    result = {
        **_features_and_figure(work, cfg, toy, train_ds, test_ds),
        "train_samples": int(len(train_ds)),
        "per_class_train": np.bincount(train_ds.labels, minlength=10).tolist(),
        "data": [str(f) for f in mnist.files],
        "figure": str(so.path / FIGURE),
        "images_per_s": summary.get("images_per_s"),
    }
    atomic_write_json(work / "toy.json", result)
    extra = finalize(work, cfg, summary, _title(cfg, toy))
    for rel in (FIGURE, FEATURES, "toy.json"):
        extra["files"][rel] = sha256_file(work / rel)
    extra["toy"] = result
    counts = {
        "processed": cfg.steps * cfg.batch_size,
        "written": 1,
        "skipped": {},
        "steps": cfg.steps,
        "train_images": len(train_ds),
        "classes": 10,
    }
    manifest = so.commit(counts, extra)
    return TrainResult(so.path, manifest, summary=result)
