"""VerifyConfig: the one home of `facecl verify` defaults."""

from __future__ import annotations

from dataclasses import dataclass

from facecl.errors import ConfigError

PROTOCOLS = ("lfw-pairs", "lfw-view1", "blufr", "pairs", "identify")
METRICS = ("cosine", "euclidean")


@dataclass(frozen=True)
class VerifyConfig:
    protocol: str = "lfw-pairs"
    """lfw-pairs (View 2, 10 folds), lfw-view1 (threshold on DevTrain, scored on DevTest),
    blufr (10 trials of VR@FAR and open-set DIR), pairs (a user CSV, k-fold), identify
    (gallery/probe: closed-set CMC and open-set DIR)."""

    metric: str = "cosine"
    """Similarity: cosine, or euclidean (minus the Euclidean distance of the raw vectors)."""

    pca_dim: int = 0
    """> 0: project on this many principal components fitted on the training part only
    (LFW: the 9 training folds of each fold, as in the center-loss paper's testing; BLUFR:
    each trial's training images). 0 = no PCA."""

    folds: int = 10
    """Number of folds for a user pair list (LFW uses the 10 sets of pairs.txt)."""

    far_targets: tuple[float, ...] = (1e-3, 1e-2)
    """FARs at which TAR is reported for pair protocols."""

    blufr_veri_far: float = 1e-3
    """BLUFR verification operating point (the protocol reports VR at FAR = 0.1%)."""

    osi_far: float = 1e-2
    """Open-set identification operating point (BLUFR: DIR at FAR = 1%)."""

    rank: int = 1
    """Rank for open-set identification (BLUFR: rank 1)."""

    hist_bins: int = 60
    """Bins of the genuine/impostor score histograms."""

    plots: bool = True
    """Write the PNG plots."""

    def validate(self) -> VerifyConfig:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"unknown protocol {self.protocol!r}", f"choose one of {', '.join(PROTOCOLS)}"
            )
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}", f"choose one of {', '.join(METRICS)}"
            )
        if self.pca_dim < 0:
            raise ConfigError(f"--pca {self.pca_dim} is negative", "use 0 (off) or a dimension")
        if self.pca_dim and self.protocol == "identify":
            raise ConfigError(
                "--pca has no training split in the identify protocol",
                "drop --pca, or use lfw-pairs / lfw-view1 / pairs / blufr",
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
