"""PNG plots (matplotlib, Agg canvas; pyplot's global state is never touched).

ROC with a log-FAR axis, DET on normal-deviate axes, genuine/impostor score histograms, and
BLUFR's VR- and DIR-vs-FAR curves (mean with a +-std band over trials).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

Curve = tuple[str, np.ndarray, np.ndarray]  # label, far (T,), rate (T,)


def _figure(width: float = 6.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _positive(far: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = far > 0
    return far[keep], rate[keep]


def plot_roc(curves: Sequence[Curve], path: Path, title: str = "ROC", ylabel: str = "TAR") -> Path:
    """Rate against FAR on a log axis, one line per curve (FAR = 0 points cannot be drawn)."""
    fig, ax = _figure()
    lo = 1.0
    for label, far, rate in curves:
        f, r = _positive(np.asarray(far, float), np.asarray(rate, float))
        if len(f):
            ax.step(f, r, where="post", label=label, lw=1.5)
            lo = min(lo, float(f.min()))
    ax.set_xscale("log")
    ax.set_xlim(max(lo, 1e-8), 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("FAR (log)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_det(curves: Sequence[Curve], path: Path, title: str = "DET") -> Path:
    """FRR (1 - TAR) against FAR on normal-deviate (probit) axes, ticks in percent."""
    from scipy.stats import norm

    fig, ax = _figure()
    eps = 1e-6
    for label, far, tar in curves:
        far = np.clip(np.asarray(far, float), eps, 1 - eps)
        frr = np.clip(1.0 - np.asarray(tar, float), eps, 1 - eps)
        ax.plot(norm.ppf(far), norm.ppf(frr), label=label, lw=1.5)
    ticks = np.array([1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5, 0.8, 0.95])
    pos = norm.ppf(ticks)
    labels = [f"{t * 100:g}" for t in ticks]
    ax.set_xticks(pos, labels)
    ax.set_yticks(pos, labels)
    ax.set_xlim(pos[0], pos[-1])
    ax.set_ylim(pos[0], pos[-1])
    ax.set_xlabel("FAR (%)")
    ax.set_ylabel("FRR (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_histograms(
    edges: np.ndarray,
    genuine: np.ndarray,
    impostor: np.ndarray,
    path: Path,
    threshold: float | None = None,
    title: str = "Score distributions",
    xlabel: str = "score",
) -> Path:
    """Genuine and impostor score densities on shared bins (counts normalised per class)."""
    fig, ax = _figure()
    widths = np.diff(edges)
    for counts, label, color in (
        (genuine, "genuine", "tab:green"),
        (impostor, "impostor", "tab:red"),
    ):
        counts = np.asarray(counts, float)
        total = counts.sum()
        dens = counts / (total * widths) if total else counts
        ax.bar(edges[:-1], dens, width=widths, align="edge", alpha=0.5, label=label, color=color)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_rate_vs_far(
    far: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    path: Path,
    ylabel: str,
    title: str,
    mark: float | None = None,
) -> Path:
    """A mean curve with a +-std band against log FAR (BLUFR VR or DIR over trials)."""
    fig, ax = _figure()
    f, m = _positive(np.asarray(far, float), np.asarray(mean, float))
    _, s = _positive(np.asarray(far, float), np.asarray(std, float))
    ax.plot(f, m, "o-", ms=3, lw=1.5, label="mean")
    ax.fill_between(f, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), alpha=0.25, label="+-std")
    if mark is not None:
        ax.axvline(mark, color="k", ls="--", lw=1, label=f"FAR = {mark:g}")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("FAR (log)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)
