"""Pure geometry of the 5-point alignment."""

from __future__ import annotations

import numpy as np
import pytest

from facecl.align.transform import (
    ARCFACE_TEMPLATE,
    TEMPLATE_112x96,
    align_face,
    center_landmarks,
    estimate_transform,
    parse_size,
    resize_inverse,
    transform_scale,
    umeyama,
    warp,
)
from facecl.errors import ConfigError


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to (N, 2) points (the test's own, independent of the code)."""
    return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def _similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


@pytest.mark.parametrize(
    "scale,angle,tx,ty", [(1.0, 0.0, 0.0, 0.0), (0.37, 0.9, -12.5, 40.0), (2.5, -2.8, 100.0, -3.0)]
)
def test_umeyama_recovers_a_known_similarity_exactly(scale, angle, tx, ty):
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    m = _similarity(scale, angle, tx, ty)
    dst = transform_points(src, m)
    est = estimate_transform(src, dst)
    np.testing.assert_allclose(est, m, atol=1e-9)
    assert transform_scale(est) == pytest.approx(scale)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_umeyama_matches_skimage_on_noisy_points():
    skt = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 150, size=(5, 2))
    dst = TEMPLATE_112x96 + rng.normal(0, 2, size=(5, 2))
    ref = skt.SimilarityTransform()
    ref.estimate(src, dst)
    np.testing.assert_allclose(umeyama(src, dst), ref.params, atol=1e-9)


def test_umeyama_never_reflects_and_rejects_degenerate_input():
    src = TEMPLATE_112x96.astype(np.float64)
    mirrored = src * [-1, 1]
    m = umeyama(src, mirrored)
    assert np.linalg.det(m[:2, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        umeyama(np.zeros((5, 2)), src)
    with pytest.raises(ValueError):
        umeyama(src[:, :1], src)


def _face_image(landmarks: np.ndarray, h: int = 160, w: int = 150) -> np.ndarray:
    """A synthetic image with a bright blob at each landmark (blob centre = landmark)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w), np.float64)
    for x, y in landmarks:
        img += 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    return np.clip(img, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)


def _blob_centres(crop: np.ndarray, guesses: np.ndarray, r: int = 6) -> np.ndarray:
    g = crop[..., 0].astype(np.float64)
    out = []
    for x, y in guesses:
        x0, y0 = int(round(x)) - r, int(round(y)) - r
        win = g[max(0, y0) : y0 + 2 * r + 1, max(0, x0) : x0 + 2 * r + 1]
        yy, xx = np.mgrid[0 : win.shape[0], 0 : win.shape[1]]
        out.append(
            [(xx * win).sum() / win.sum() + max(0, x0), (yy * win).sum() / win.sum() + max(0, y0)]
        )
    return np.array(out)


@pytest.mark.parametrize("size", ["112x96", "112x112"])
def test_warped_landmarks_land_on_the_template(size):
    rng = np.random.default_rng(2)
    tmpl = TEMPLATE_112x96 if size == "112x96" else ARCFACE_TEMPLATE
    # a face seen rotated, scaled and shifted: landmarks = inverse similarity of the template
    m = _similarity(0.8, 0.3, 20.0, 5.0)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    lm = transform_points(tmpl + rng.normal(0, 0.7, (5, 2)), inv)
    img = _face_image(lm)
    crop = align_face(img, lm, size)
    assert crop.shape == (*parse_size(size), 3) and crop.dtype == np.uint8
    found = _blob_centres(crop, tmpl)
    assert np.abs(found - tmpl).max() < 2.0


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_112x112_align_face_equals_insightface_norm_crop_within_one_level(lfw_mini):
    fa = pytest.importorskip("insightface.utils.face_align")  # a dev-extra oracle
    import cv2

    img = cv2.imread(str(next((lfw_mini / "lfw_original_150px").rglob("*.jpg"))))
    rng = np.random.default_rng(3)
    for _ in range(5):
        lm = (ARCFACE_TEMPLATE * 0.8 + 25 + rng.normal(0, 3, (5, 2))).astype(np.float32)
        ours = align_face(img, lm, "112x112")
        ref = fa.norm_crop(img, lm)
        assert ours.shape == ref.shape == (112, 112, 3)
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


def test_warp_antialiases_strong_downscale_without_moving_the_face():
    lm = TEMPLATE_112x96 * 10 + 50  # a face 10x the crop size
    import cv2

    img = np.zeros((1300, 1100, 3), np.uint8)  # thick blobs so they survive the reduction

    for x, y in lm:
        cv2.circle(img, (int(round(x)), int(round(y))), 25, (255, 255, 255), -1)
    m = estimate_transform(lm, TEMPLATE_112x96)
    assert transform_scale(m) < 0.5
    crop = warp(img, m, (112, 96))
    found = _blob_centres(crop, TEMPLATE_112x96, r=4)
    assert np.abs(found - TEMPLATE_112x96).max() < 1.0


def test_resize_inverse_matches_cv2_pixel_centres():
    import cv2

    img = np.zeros((100, 80), np.uint8)
    img[40, 30] = 255
    small = cv2.resize(img, (40, 50), interpolation=cv2.INTER_LINEAR)
    y, x = np.unravel_index(np.argmax(small), small.shape)
    back = resize_inverse(0.5, 0.5) @ [x, y, 1]
    assert abs(back[0] - 30) <= 1 and abs(back[1] - 40) <= 1


def test_center_landmarks_sit_in_the_middle():
    lm = center_landmarks(150, 150, "112x96", fraction=0.5)
    assert lm.shape == (5, 2)
    assert 60 < lm[:, 0].mean() < 90 and 60 < lm[:, 1].mean() < 100
    assert lm[1, 0] > lm[0, 0]  # right eye right of left eye


def test_unknown_size_is_a_config_error():
    with pytest.raises(ConfigError, match="112x96"):
        parse_size("100x100")
