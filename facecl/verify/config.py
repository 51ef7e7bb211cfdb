"""VerifyConfig: the one home of `facecl verify` defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from facecl.errors import ConfigError

Metric = Literal["cosine", "euclidean"]
Fusion = Literal["stored", "sum", "concat"]
FUSIONS: tuple[str, ...] = get_args(Fusion)
METRICS: tuple[str, ...] = get_args(Metric)


def protocol_names() -> Sequence[str]:
    """The registered protocols (``facecl.verify.evaluate.PROTOCOLS``)."""
    from facecl.verify.evaluate import PROTOCOLS

    return PROTOCOLS.names()


@dataclass(frozen=True)
class VerifyConfig:
    protocol: str = field(
        default="lfw-pairs", metadata={"cli_short": "-p", "cli_choices": protocol_names}
    )
    """lfw-pairs (View 2, 10 folds), lfw-view1 (threshold on DevTrain, scored on DevTest),
    blufr (10 trials of VR@FAR and open-set DIR), pairs (a user CSV, k-fold), bin
    (insightface's protocol on the pairs of embedded .bin sets; several EMB give one
    table), identify (gallery/probe: closed-set CMC and open-set DIR)."""

    fusion: Fusion = "stored"
    """Features scored: stored (as embedded), sum (FC1(image) + FC1(flip), insightface's:
    the halves of concat embeddings are added), or concat (must be concat-fused). facecl
    embeds with concat by default; use sum to compare --protocol bin with insightface."""

    metric: Metric = "cosine"
    """Similarity: cosine, or euclidean (minus the Euclidean distance of the raw vectors)."""

    pca_dim: int = field(default=0, metadata={"cli_name": "--pca"})
    """> 0: project on this many principal components fitted on the training part only
    (LFW: the 9 training folds of each fold, as in the center-loss paper's testing; BLUFR:
    each trial's training images). 0 = no PCA."""

    folds: int = 10
    """Number of folds for a user pair list and for bin (contiguous, in file order;
    insightface uses 10). LFW uses the 10 sets of pairs.txt."""

    far_targets: tuple[float, ...] = field(default=(1e-3, 1e-2), metadata={"cli_name": "--far"})
    """FARs at which TAR is reported for pair protocols (repeatable, or comma-separated)."""

    blufr_veri_far: float = 1e-3
    """BLUFR verification operating point (the protocol reports VR at FAR = 0.1%)."""

    osi_far: float = 1e-2
    """Open-set identification operating point (BLUFR: DIR at FAR = 1%)."""

    rank: int = 1
    """Rank for open-set identification (BLUFR: rank 1)."""

    hist_bins: int = 60
    """Bins of the genuine/impostor score histograms."""

    plots: bool = True
    """Write the PNG plots (``--no-plots``: only the numbers)."""

    def validate(self) -> VerifyConfig:
        from facecl.verify.evaluate import PROTOCOLS

        proto = PROTOCOLS.get(self.protocol)
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}", f"choose one of {', '.join(METRICS)}"
            )
        if self.fusion not in FUSIONS:
            raise ConfigError(
                f"unknown fusion {self.fusion!r}", f"choose one of {', '.join(FUSIONS)}"
            )
        if self.pca_dim < 0:
            raise ConfigError(f"--pca {self.pca_dim} is negative", "use 0 (off) or a dimension")
        if self.pca_dim and not proto.training_split:
            split = [n for n in PROTOCOLS.names() if PROTOCOLS.get(n).training_split]
            raise ConfigError(
                f"--pca has no training split in the {self.protocol} protocol",
                f"drop --pca, or use {' / '.join(split)}",
            )
        if self.folds < 2:
            raise ConfigError(f"--folds {self.folds} is below 2", "use 2 or more folds")
        for f in (*self.far_targets, self.blufr_veri_far, self.osi_far):
            if not 0 < f < 1:
                raise ConfigError(f"FAR {f} is outside (0, 1)", "use e.g. 1e-3")
        if self.rank < 1:
            raise ConfigError(f"--rank {self.rank} is below 1", "ranks start at 1")
        if self.hist_bins < 2:
            raise ConfigError(f"hist_bins {self.hist_bins} is below 2", "use e.g. 60")
        return self
