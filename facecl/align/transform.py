"""Five-point similarity alignment: pure numpy estimation, ``cv2.warpAffine`` warping.

Coordinates are pixel coordinates with pixel centres at integers (the OpenCV convention,
also insightface's). A transform ``M`` is a 2x3 matrix mapping source points to crop points:
``dst = M[:, :2] @ src + M[:, 2]``.

Templates (x, y) of the five points: left eye, right eye, nose tip, left and right mouth
corner (left/right as seen in the image).

- ``112x96``: the 96x112 template of the center-loss (Wen et al. 2016) and SphereFace
  (Liu et al. 2017) papers.
- ``112x112``: insightface's ArcFace template (``insightface.utils.face_align.arcface_dst``),
  i.e. the 96x112 template shifted 8 px right; :func:`align_face` at 112x112 reproduces
  ``insightface.utils.face_align.norm_crop``.
"""

from __future__ import annotations

import numpy as np

# (5, 2) float32 templates, (x, y) per point, for crops of (height, width).
TEMPLATE_112x96 = np.array(
    [
        [30.2946, 51.6963],
        [65.5318, 51.5014],
        [48.0252, 71.7366],
        [33.5493, 92.3655],
        [62.7299, 92.2041],
    ],
    dtype=np.float32,
)
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

SIZES: dict[str, tuple[int, int]] = {"112x96": (112, 96), "112x112": (112, 112)}


def parse_size(size: str) -> tuple[int, int]:
    """``"112x96"`` -> ``(112, 96)`` (height, width); only the sizes with a template."""
    if size not in SIZES:
        from facecl.errors import ConfigError

        raise ConfigError(
            f"unsupported crop size {size!r}", f"choose one of: {', '.join(sorted(SIZES))}"
        )
    return SIZES[size]


def template_for(size: str) -> np.ndarray:
    """The (5, 2) float32 template of a crop size (a copy)."""
    parse_size(size)
    return (TEMPLATE_112x96 if size == "112x96" else ARCFACE_TEMPLATE).copy()


def umeyama(src: np.ndarray, dst: np.ndarray, estimate_scale: bool = True) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` onto ``dst`` (Umeyama 1991).

    ``src``, ``dst``: (N, 2). Returns the 3x3 homogeneous matrix ``T`` (float64) with
    ``dst ~ T[:2, :2] @ src + T[:2, 2]``: rotation, uniform scale and translation, no
    reflection. Same algorithm as ``skimage.transform.SimilarityTransform.estimate``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (N>=2, 2) arrays, got {src.shape} and {dst.shape}")
    n, dim = src.shape
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n  # (2, 2)
    d = np.ones(dim)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    t = np.eye(dim + 1)
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        raise ValueError("degenerate landmarks: all points coincide")
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            t[:dim, :dim] = u @ vt
        else:
            s_ = d[-1]
            d[-1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ vt
            d[-1] = s_
    else:
        t[:dim, :dim] = u @ np.diag(d) @ vt
    scale = 1.0 / src_c.var(0).sum() * (s @ d) if estimate_scale else 1.0
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean)
    t[:dim, :dim] *= scale
    return t


def estimate_transform(landmarks: np.ndarray, template: np.ndarray) -> np.ndarray:
    """2x3 similarity matrix taking the five ``landmarks`` (5, 2) onto ``template`` (5, 2)."""
    return umeyama(landmarks, template)[:2, :]


def transform_scale(m: np.ndarray) -> float:
    """The uniform scale factor of a 2x3 similarity matrix."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


def warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp ``image`` (H, W, C) uint8 with the 2x3 matrix ``m`` into a (h, w, C) crop.

    Bilinear, black border (``cv2.warpAffine`` defaults, as insightface's ``norm_crop``).
    When the transform shrinks by more than 2x, the image is first reduced with area
    averaging so that the crop is not aliased; the matrix is adjusted to match.
    """
    import cv2

    h, w = size
    m = np.asarray(m, dtype=np.float64)
    scale = transform_scale(m)
    if scale < 0.5:
        r = min(1.0, 1.5 * scale)  # reduce so the remaining warp scale is ~1/1.5
        small = cv2.resize(
            image,
            (max(1, round(image.shape[1] * r)), max(1, round(image.shape[0] * r))),
            interpolation=cv2.INTER_AREA,
        )
        rx = small.shape[1] / image.shape[1]
        ry = small.shape[0] / image.shape[0]
        m = m @ resize_inverse(rx, ry)
        image = small
    return cv2.warpAffine(image, m, (w, h), borderValue=0.0)


def resize_inverse(rx: float, ry: float) -> np.ndarray:
    """3x3 matrix mapping pixel coordinates of a ``cv2.resize``-d image back to the original.

    cv2 maps pixel centres: ``x_new = (x_old + 0.5) * rx - 0.5``.
    """
    return np.array(
        [[1.0 / rx, 0.0, 0.5 / rx - 0.5], [0.0, 1.0 / ry, 0.5 / ry - 0.5], [0.0, 0.0, 1.0]]
    )


def align_face(image: np.ndarray, landmarks: np.ndarray, size: str = "112x96") -> np.ndarray:
    """The aligned (h, w, C) crop of ``image`` for five ``landmarks`` (5, 2) at ``size``."""
    hw = parse_size(size)
    m = estimate_transform(landmarks, template_for(size))
    return warp(image, m, hw)


def center_landmarks(
    height: int, width: int, size: str = "112x96", fraction: float = 0.5
) -> np.ndarray:
    """Synthetic landmarks for a fixed centre crop: the (5, 2) template placed so that the
    crop window covers a centred region whose height is ``fraction * min(height, width)``.
    """
    ch, cw = parse_size(size)
    region_h = fraction * min(height, width)
    s = region_h / ch  # crop pixel -> image pixel
    tmpl = template_for(size).astype(np.float64)
    # crop centre ((cw-1)/2, (ch-1)/2) goes to the image centre
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    pts = (tmpl - [(cw - 1) / 2.0, (ch - 1) / 2.0]) * s + [cx, cy]
    return pts.astype(np.float32)
