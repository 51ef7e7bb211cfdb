"""Our MTCNN: the building blocks against hand computations, the whole on lfw_mini."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facecl.align.mtcnn import (
    MTCNN,
    Detections,
    calibrate,
    generate_boxes,
    load_nets,
    nms_min,
    pyramid_scales,
    square,
    weights_dir,
    whc_to_chw_dense,
)
from facecl.align.select import rank_faces


def test_weights_ship_in_the_package_and_load_safely():
    d = weights_dir()
    for name in ("pnet", "rnet", "onet"):
        assert (d / f"{name}.pt").is_file()
    assert (d / "LICENSE-facenet-pytorch.md").is_file()
    pnet, rnet, onet = load_nets()
    assert rnet.dense4.weight.shape == (128, 576) and onet.dense5.weight.shape == (256, 1152)


def test_dense_reorder_equals_caffe_whc_flatten():
    torch.manual_seed(0)
    feats = torch.randn(4, 64, 3, 3)  # (N, C, H, W)
    lin = torch.nn.Linear(576, 8)
    ref = lin(feats.permute(0, 3, 2, 1).reshape(4, -1))  # converted-Caffe order (W, H, C)
    lin.weight.data = whc_to_chw_dense(lin.weight.data, 64, 3, 3)
    torch.testing.assert_close(lin(feats.flatten(1)), ref)


def test_pyramid_scales_cover_min_face_to_image():
    scales = pyramid_scales(150, 200, min_face=20, factor=0.709)
    assert scales[0] == pytest.approx(12 / 20)
    np.testing.assert_allclose(np.diff(np.log(scales)), np.log(0.709))
    assert 150 * scales[-1] >= 12 > 150 * scales[-1] * 0.709
    assert pyramid_scales(19, 300, min_face=20, factor=0.709) == []


def test_generate_boxes_maps_cells_back_to_the_image():
    prob = torch.zeros(1, 5, 6)
    prob[0, 2, 3] = 0.9  # row 2, col 3
    reg = torch.zeros(1, 4, 5, 6)
    reg[0, :, 2, 3] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    boxes, img = generate_boxes(reg, prob, scale=0.5, threshold=0.6)
    assert img.tolist() == [0]
    # cell (x=3, y=2), stride 2, 12 px window, scale 0.5 -> floor((2*3+1)/0.5) = 14 ...
    assert boxes[0, :4].tolist() == [14.0, 10.0, 36.0, 32.0]
    assert boxes[0, 4].item() == pytest.approx(0.9)
    assert boxes[0, 5:].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_calibrate_and_square():
    b = torch.tensor([[10.0, 20.0, 29.0, 59.0, 0.8]])
    c = calibrate(b, torch.tensor([[0.1, -0.1, 0.0, 0.05]]))  # w = 20, h = 40 (inclusive)
    assert c[0].tolist() == pytest.approx([12.0, 16.0, 29.0, 61.0, 0.8])
    s = square(b)
    assert (s[0, 2] - s[0, 0]).item() == pytest.approx((s[0, 3] - s[0, 1]).item())
    assert ((s[0, 0] + s[0, 2]) / 2).item() == pytest.approx(19.5)
    assert s[0, 4].item() == pytest.approx(0.8)


def test_nms_min_removes_contained_boxes_per_image():
    boxes = np.array(
        [[0, 0, 99, 99], [10, 10, 40, 40], [200, 200, 210, 210], [0, 0, 99, 99]], float
    )
    scores = np.array([0.9, 0.95, 0.5, 0.7])
    groups = np.array([0, 0, 0, 1])
    keep = nms_min(boxes, scores, groups, 0.7)
    # box 1 lies inside box 0: min-overlap 1.0 suppresses the lower-scored box 0
    assert sorted(keep.tolist()) == [1, 2, 3]


def test_finds_a_face_in_every_lfw_mini_image(mini_images, mini_detections):
    assert len(mini_detections) == len(mini_images)
    for im, det in zip(mini_images, mini_detections, strict=True):
        assert len(det) >= 1
        i = int(rank_faces(det.boxes, im.shape[0], im.shape[1])[0])
        lm, box = det.landmarks[i], det.boxes[i]
        assert det.scores[i] > 0.9
        # anatomy: eyes above the nose above the mouth, left left of right, all in the box
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert (lm[:, 0] > box[0]).all() and (lm[:, 0] < box[2]).all()
        # LFW faces are centred in the photo
        assert abs(lm[2, 0] - im.shape[1] / 2) < 25 and abs(lm[2, 1] - im.shape[0] / 2) < 25


def test_flip_consistency(detector, mini_images):
    """Landmarks of a mirrored image, mapped back, match: no left-right pixel bias."""
    imgs = mini_images[:24]
    a = detector.detect(imgs)
    b = detector.detect([np.ascontiguousarray(im[:, ::-1]) for im in imgs])
    bias = []
    for im, da, db in zip(imgs, a, b, strict=True):
        w = im.shape[1]
        la = da.landmarks[int(rank_faces(da.boxes, *im.shape[:2])[0])]
        lb = db.landmarks[int(rank_faces(db.boxes, *im.shape[:2])[0])][[1, 0, 2, 4, 3]]
        bias.append((la[:, 0] - (w - 1 - lb[:, 0])).mean() / 2)
    assert abs(np.mean(bias)) < 0.3


def test_batching_mixed_sizes_equals_one_by_one(detector, mini_images):
    rng = np.random.default_rng(0)
    imgs = [mini_images[0], mini_images[1][:140], mini_images[2][:, :130]]
    imgs.append(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    together = detector.detect(imgs)
    for im, det in zip(imgs, together, strict=True):
        alone = detector.detect([im])[0]
        assert len(alone) == len(det)
        np.testing.assert_allclose(alone.landmarks, det.landmarks, atol=1e-3)


def test_edge_inputs(detector):
    assert detector.detect([]) == []
    tiny = np.zeros((10, 10, 3), np.uint8)
    flat = np.full((100, 120, 3), 128, np.uint8)
    out = detector.detect([tiny, flat])
    assert [len(d) for d in out] == [0, 0]
    with pytest.raises(ValueError, match="uint8"):
        detector.detect([np.zeros((50, 50), np.uint8)])


def test_huge_image_is_detected_at_reduced_size_and_mapped_back(mini_images):
    import cv2

    det = MTCNN(max_side=200, min_face=40)
    im = mini_images[5]
    big = cv2.resize(im, (900, 900), interpolation=cv2.INTER_CUBIC)  # 6x
    small = det.detect([im])[0]
    large = det.detect([big])[0]
    i = int(rank_faces(small.boxes, 150, 150)[0])
    j = int(rank_faces(large.boxes, 900, 900)[0])
    expect = (small.landmarks[i] + 0.5) * 6 - 0.5
    assert np.abs(large.landmarks[j] - expect).max() < 9  # 1.5 px at the original scale


def test_detections_scaled_round_trip():
    d = Detections(
        np.array([[10, 20, 30, 40]], np.float32),
        np.array([0.9], np.float32),
        np.arange(10, dtype=np.float32).reshape(1, 5, 2),
    )
    s = d.scaled(2.0, 3.0)
    assert s.boxes[0].tolist() == [20.5, 61.0, 60.5, 121.0]
    assert s.landmarks[0, 1].tolist() == [4.5, 10.0]  # (2, 3) -> (2.5*2-.5, 3.5*3-.5)


@pytest.mark.gpu
def test_cuda_matches_cpu(detector, mini_images):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = MTCNN(device="cuda")
    for a, b in zip(detector.detect(mini_images[:16]), gpu.detect(mini_images[:16]), strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)


def test_onnxruntime_nets_give_the_same_detections_as_torch(detector, mini_images, mini_detections):
    """The torch nets (the default, in cache-sized pieces on the CPU) against the onnxruntime
    nets on every lfw_mini image: the same faces, boxes and landmarks to float32 rounding."""
    assert detector.backend == "torch"  # auto
    ort_det = MTCNN(backend="onnxruntime")
    assert ort_det.backend == "onnxruntime"
    ref = []
    for s in range(0, len(mini_images), 64):
        ref += ort_det.detect(mini_images[s : s + 64])
    for a, b in zip(mini_detections, ref, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    with pytest.raises(ValueError, match="unknown MTCNN backend"):
        MTCNN(backend="tensorrt")


def test_net_pieces_do_not_change_detections(detector, mini_images, mini_detections):
    """R-/O-Net on 64 crops and P-Net on ~160k pixels per call (the CPU default) give what
    whole-batch calls give."""
    whole = MTCNN(net_batch=1 << 20, pnet_pixels=1 << 30)
    assert (detector.net_batch, detector.pnet_pixels) == (64, 160_000)
    tiny = MTCNN(net_batch=3, pnet_pixels=5000)  # many pieces, ragged last ones
    for other in (whole, tiny):
        for a, b in zip(mini_detections[:64], other.detect(mini_images[:64]), strict=True):
            assert len(a) == len(b)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_min_face_fraction_skips_only_the_leading_scales():
    full = pyramid_scales(150, 200, min_face=20, factor=0.709)
    cut = pyramid_scales(150, 200, min_face=20, factor=0.709, fraction=0.2)
    # faces of 20 and 28.2 px are below 0.2 x 150 = 30 px; the rest of the pyramid is kept
    assert cut == full[2:]
    assert 12 / cut[0] >= 30 > 12 / full[1]
    assert pyramid_scales(150, 200, 20, 0.709, fraction=0.0) == full
    # a huge fraction leaves at most the last scale(s) near the image size
    assert pyramid_scales(150, 200, 20, 0.709, fraction=0.99) == []


def test_min_face_fraction_default_finds_the_same_faces(mini_images, mini_detections):
    """On lfw_mini the default 0.2 finds the central face of every image, with the landmarks
    of the full pyramid (0) in nearly every image; 0 may add small background faces."""
    full = MTCNN(min_face_fraction=0.0)
    ref = []
    for s in range(0, len(mini_images), 64):
        ref += full.detect(mini_images[s : s + 64])
    far = []
    for im, a, b in zip(mini_images, mini_detections, ref, strict=True):
        assert len(a) >= 1 and len(b) >= len(a)
        i = int(rank_faces(a.boxes, *im.shape[:2])[0])
        j = int(rank_faces(b.boxes, *im.shape[:2])[0])
        d = np.linalg.norm(a.landmarks[i] - b.landmarks[j], axis=1).mean()
        far.append(d)
    far_a = np.array(far)
    # the same landmarks (float32 rounding) in nearly all images, a small shift in the rest
    assert (far_a < 1e-2).mean() > 0.9 and far_a.mean() < 0.1 and far_a.max() < 2.5


def test_crops_split_over_threads_equal_one_call(detector):
    """The CPU's serial roi_align kernel runs on torch's threads, in pieces: the same crops."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(0)
    t = torch.rand(3, 3, 60, 80, generator=g) * 255
    xy = torch.rand(301, 2, generator=g) * 50 - 5  # some boxes past the edges
    rois = torch.cat([torch.randint(0, 3, (301, 1), generator=g).float(), xy, xy + 24], 1)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = detector._roi_align(t, rois, 24, 0.5)
        assert detector._pool_size == 2  # really split
    finally:
        torch.set_num_threads(old)
    want = roi_align(t, rois, (24, 24), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    assert torch.equal(got, want)
