"""Figures of the train stage (matplotlib, Agg): the training curve and 2-d feature plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curve(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> None:
    """Loss terms, center distance, lr and throughput against the step."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    steps = [r["step"] for r in records]

    def series(key: str) -> list[float] | None:
        vals = [r.get(key) for r in records]
        return None if all(v is None for v in vals) else [np.nan if v is None else v for v in vals]

    ax = axes[0, 0]
    for key, label in (
        ("loss", "total"),
        ("softmax", "softmax / margin"),
        ("weighted_center", "lambda * center"),
        ("invariant", "gamma * invariant"),
    ):
        vals = series(key)
        if vals is not None and any(v > 0 for v in vals if v == v):
            ax.plot(steps, vals, label=label)
    ax.set_yscale("log")
    ax.set_title("loss terms")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for key in ("center_dist_mean", "center_dist_p90", "center_norm_mean"):
        vals = series(key)
        if vals is not None:
            ax.plot(steps, vals, label=key)
    ax.set_title("feature-to-center distance, center norm")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[1, 0]
    lr = series("lr")
    if lr is not None:
        ax.plot(steps, lr, drawstyle="steps-post")
    ax.set_yscale("log")
    ax.set_title("learning rate")
    ax = axes[1, 1]
    ips = series("images_per_s")
    if ips is not None:
        ax.plot(steps, ips, label="images/s")
    ax.set_title("throughput (images/s)")
    wait = series("loader_wait_share")
    if wait is not None:
        ax2 = ax.twinx()
        ax2.plot(steps, wait, color="tab:red", alpha=0.6, label="loader wait share")
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("loader wait share", color="tab:red")
    for a in axes[1]:
        a.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def feature_scatter(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    centers: np.ndarray | None,
    path: str | Path,
    title: str = "",
) -> None:
    """ECCV Fig. 3 / IJCV Fig. 5 style: 2-d features coloured by class, centers as black x.

    ``panels``: (name, features (N, 2), labels (N,)); ``centers`` (C, 2) or None.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5))
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("tab10")
    for ax, (name, feats, labels) in zip(axes, panels, strict=True):
        for c in np.unique(labels):
            sel = labels == c
            ax.scatter(feats[sel, 0], feats[sel, 1], s=1.5, color=cmap(int(c) % 10), label=str(c))
        if centers is not None:
            ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=60, c="black", linewidths=2)
        ax.set_title(name)
        ax.set_aspect("equal", adjustable="datalim")
        ax.legend(markerscale=6, fontsize=7, loc="upper right", ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
