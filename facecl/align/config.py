"""Configuration of the align stage: the only home of its defaults.

``AlignConfig`` holds everything that changes the output (it is the manifest's ``config``
and part of the fingerprint). ``AlignRuntime`` holds how the work is done (device, batch,
threads): it never changes which images are aligned, so a run resumed with other runtime
settings keeps its finished chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from facecl.device import Device, check_device, resolve_device
from facecl.errors import ConfigError, UsageError

Size = Literal["112x96", "112x112"]
OnMiss = Literal["skip", "landmarks", "center"]
ON_MISS: tuple[str, ...] = get_args(OnMiss)
DetectorBackend = Literal["auto", "onnxruntime", "torch"]
DETECTOR_BACKENDS: tuple[str, ...] = get_args(DetectorBackend)


@dataclass(frozen=True)
class AlignConfig:
    size: Size = "112x96"
    """Crop size HxW: ``112x96`` (center-loss/SphereFace template) or ``112x112`` (ArcFace)."""
    min_face: float = 20.0
    """Smallest face side, in pixels of the detection image, MTCNN looks for."""
    min_face_fraction: float = 0.2
    """...and no smaller than this fraction of the image's shorter side: the pyramid's
    leading scales (faces below it) are skipped; the others are unchanged. 0.2 finds every
    LFW face 1.6x faster; use 0 for group or crowd photos with small faces."""
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    """Face-probability thresholds of P-Net, R-Net and O-Net."""
    factor: float = 0.709
    """Scale step of the image pyramid."""
    all_faces: bool = False
    """Keep every detected face (``<stem>.face<k>.png``) instead of the most central one."""
    on_miss: OnMiss = "skip"
    """No face found: ``skip`` the image, warp with provided ``landmarks``, or ``center`` crop."""
    center_fraction: float = 0.52
    """Centre-crop fallback: the crop covers this fraction of the image's shorter side
    (the median for MTCNN-aligned LFW 150 px originals)."""
    max_side: int = 1000
    """Images with a longer side are reduced to it for detection (bounded memory and time:
    a 12 MP photo is detected on a 1 MP copy); the crop is still cut from the full image."""
    max_pixels: int = 100_000_000
    """Images with more pixels are skipped as ``too_large`` (JPEGs are first decoded at a
    reduced scale when that brings them under it)."""
    chunk_size: int = 256
    """Images per resumable unit (a chunk is never redone once written); shards are
    interleaved chunks, so shards plus merge reproduce a single run exactly."""
    shard: str | None = None
    """``K/N``: process the K-th (1-based) of N interleaved slices; None = everything."""

    def __post_init__(self) -> None:
        from facecl.align.transform import SIZES

        if self.size not in get_args(Size) or self.size not in SIZES:
            raise ConfigError(
                f"unsupported --size {self.size!r}", f"choose one of: {', '.join(sorted(SIZES))}"
            )
        if not self.min_face >= 12:
            raise ConfigError(
                f"--min-face must be at least 12 px, got {self.min_face}",
                "P-Net's window is 12 px",
            )
        if not 0 <= self.min_face_fraction < 1:
            raise ConfigError(
                f"--min-face-fraction must be in [0, 1), got {self.min_face_fraction}",
                "0 looks for faces down to --min-face, e.g. 0.2",
            )
        if len(self.thresholds) != 3 or not all(0 <= t < 1 for t in self.thresholds):
            raise ConfigError(
                f"--thresholds must be three values in [0, 1), got {self.thresholds}",
                "e.g. --thresholds 0.6,0.7,0.7",
            )
        if not 0.1 <= self.factor < 1:
            raise ConfigError(f"--factor must be in [0.1, 1), got {self.factor}", "e.g. 0.709")
        if self.on_miss not in ON_MISS:
            raise ConfigError(
                f"unknown --on-miss {self.on_miss!r}", f"choose one of: {', '.join(ON_MISS)}"
            )
        if not 0 < self.center_fraction <= 2:
            raise ConfigError(f"center_fraction must be in (0, 2], got {self.center_fraction}")
        if self.max_side < 64 or self.max_pixels < 1 or self.chunk_size < 1:
            raise ConfigError("max_side >= 64, max_pixels >= 1 and chunk_size >= 1 are required")
        if self.shard is not None:
            parse_shard(self.shard)

    @property
    def shard_kn(self) -> tuple[int, int] | None:
        return None if self.shard is None else parse_shard(self.shard)


@dataclass(frozen=True)
class AlignRuntime:
    device: Device = "auto"
    """Where MTCNN runs: ``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    batch_size: int | None = None
    """Images per detector call (P-Net per pyramid scale over the batch); None = 64 on the
    CPU, 256 on CUDA (a GPU needs larger batches to be busy)."""
    workers: int = 2
    """Threads decoding images ahead of the detector."""
    detector_backend: DetectorBackend = "auto"
    """What runs MTCNN's nets: auto (torch: on the CPU in cache-sized pieces, faster than
    onnxruntime), torch or onnxruntime (CPU only; on CUDA torch is used). The same
    detections; landmarks equal to ~1e-4 px (docs/benchmarks.md)."""
    verify_inputs: bool = False
    """Hash the bytes of every input file (sha256, streamed: reads the whole tree) to decide
    whether OUT is up to date, instead of trusting the hash cache while a file's size and
    mtime are unchanged (an edit that keeps both is missed without it); the hashes are
    recorded in the manifest. A runtime option: OUT's fingerprint is the same with or
    without it."""
    writers: int = 2
    """Threads warping the crops and writing the PNGs behind the detector, so it never
    waits on them; 0 = on the main thread, between detector batches (serial)."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.detector_backend not in DETECTOR_BACKENDS:
            raise ConfigError(
                f"unknown --detector-backend {self.detector_backend!r}",
                f"choose one of: {', '.join(DETECTOR_BACKENDS)}",
            )
        if (self.batch_size is not None and self.batch_size < 1) or self.workers < 1:
            raise ConfigError("--batch-size and --workers must be at least 1")
        if self.writers < 0:
            raise ConfigError(f"--writers must be 0 or more, got {self.writers}")

    def torch_device(self) -> str:
        return resolve_device(self.device)

    def detector_batch(self) -> int:
        """``batch_size``, or the device's default when it is None."""
        if self.batch_size is not None:
            return self.batch_size
        return 256 if self.torch_device() == "cuda" else 64


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; K is 1-based."""
    try:
        k_s, n_s = text.split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise UsageError(f"malformed --shard {text!r}", "write K/N, e.g. --shard 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(
            f"--shard {text}: K must be in 1..N", "shards are numbered 1..N, e.g. 1/4 .. 4/4"
        )
    return k, n
