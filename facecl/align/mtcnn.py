"""MTCNN face detector (Zhang, Zhang, Li, Qiao, IEEE SPL 2016) in PyTorch, batched.

Three cascaded networks: P-Net scans an image pyramid and proposes boxes, R-Net rejects and
refines them on 24x24 crops, O-Net on 48x48 crops gives the final boxes and five landmarks.
The vendored weights (``facecl/data/mtcnn/*.pt``, see SOURCE.md there) are the original
Caffe models as converted by facenet-pytorch. Their conventions, kept here:

- input RGB scaled as ``(x - 127.5) / 128``, in normal (H, W) orientation (the Caffe models
  see transposed images; the conversion moved that transpose into the dense layers);
- the dense layers expect the conv features flattened in (W, H, C) order; we permute the
  dense weights once at load time so that a plain channel-first flatten is used;
- the 10 landmark outputs are five x values then five y values, relative to the crop.

Batching: images of equal size share each P-Net pass (one per pyramid scale); R-Net and
O-Net see the crops of every candidate of every image together. On the CPU each pass runs in
cache-sized pieces (``net_batch`` crops, ``pnet_pixels`` pixels). Crops are cut with
``torchvision.ops.roi_align`` from a 2x area pyramid of the batch (area-like resampling at a
bounded cost, black outside the image as the original zero padding); NMS is
``torchvision.ops.batched_nms`` per image (IoU), and "Min" overlap after O-Net as in the
authors' code. Box calibration and square-ing follow the authors' MATLAB code, except that
boxes stay fractional: the crop is cut at the exact box and the landmarks are placed in that
same box (the MATLAB code truncates the box before cropping; facenet-pytorch crops the
truncated box but places the landmarks in the untruncated one, +0.5 px on average).

Coordinates returned: 0-based pixel coordinates with pixel centres at integers (OpenCV's).
Boxes are (left, top, right, bottom) edges; landmarks are ``edge + size * output``. A
left-right flip test on LFW (landmarks of the mirrored image mapped back) puts our x bias at
+0.07 px; facenet-pytorch's output, which keeps the MATLAB 1-based "- 1", is +1.08 px.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# The detector's own input convention (the Caffe MTCNN models'): (x - 127.5) * 0.0078125 on
# RGB. It equals the recognition backbones' (facecl.models.input_spec) by history only; the
# two are separate constants because the vendored weights fix this one.
DETECTOR_MEAN = 127.5
DETECTOR_SCALE = 0.0078125

# --------------------------------------------------------------------------- networks


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> box offsets (B, 4, h, w), face probability (B, h, w)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]
        return self.conv4_2(x), prob


class RNet(nn.Module):
    """Refine net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 24, 24) -> box offsets (N, 4), face probability (N,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))  # (N, 64, 3, 3)
        x = self.prelu4(self.dense4(x.flatten(1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net on 48x48 crops: box offsets, five landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 3, 48, 48) -> box offsets (N, 4), landmarks (N, 10) [x*5, y*5], prob (N,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))  # (N, 128, 3, 3)
        x = self.prelu5(self.dense5(x.flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


def whc_to_chw_dense(weight: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """Reorder a dense weight's input columns from (W, H, C) flatten order to (C, H, W).

    (out, W*H*C) -> (out, C*H*W), so ``dense(x.flatten(1))`` on (N, C, H, W) features equals
    the converted Caffe model's ``dense(x.permute(0, 3, 2, 1).flatten(1))``.
    """
    out = weight.shape[0]
    return weight.reshape(out, w, h, c).permute(0, 3, 2, 1).reshape(out, c * h * w).contiguous()


def weights_dir() -> Path:
    """The vendored weights shipped as package data (``facecl/data/mtcnn``)."""
    return Path(str(resources.files("facecl"))) / "data" / "mtcnn"


def load_nets(
    device: torch.device | str = "cpu", weights: Path | None = None
) -> tuple[PNet, RNet, ONet]:
    """The three nets with the vendored weights (``torch.load(weights_only=True)``)."""
    from facecl.errors import InputError

    root = Path(weights) if weights is not None else weights_dir()
    nets = (PNet(), RNet(), ONet())
    for name, net in zip(("pnet", "rnet", "onet"), nets, strict=True):
        path = root / f"{name}.pt"
        if not path.is_file():
            raise InputError(
                f"MTCNN weights missing: {path}", "reinstall facecl (the weights ship with it)"
            )
        sd = torch.load(path, map_location="cpu", weights_only=True)
        if name == "rnet":
            sd["dense4.weight"] = whc_to_chw_dense(sd["dense4.weight"], 64, 3, 3)
        elif name == "onet":
            sd["dense5.weight"] = whc_to_chw_dense(sd["dense5.weight"], 128, 3, 3)
        net.load_state_dict(sd)
        # channels-last is ~2x faster for these small convs and pools on CPU
        # memory_format is accepted at run time but missing from torch's Module.to overloads
        net.to(device, memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        for p in net.parameters():
            p.requires_grad_(False)
    return nets


# --------------------------------------------------------------------------- box helpers


def pyramid_scales(
    height: int, width: int, min_face: float, factor: float, fraction: float = 0.0
) -> list[float]:
    """Scales at which P-Net's 12 px window sees faces from ``min_face`` px up to the image.

    ``fraction`` > 0 drops the leading scales whose faces (``12 / scale`` px) are smaller
    than ``fraction`` x the shorter side: the remaining scales are the same as without it,
    so a face above that bound meets the same P-Net passes.
    """
    m = 12.0 / min_face
    short = min(height, width)
    minl = short * m
    scales = []
    s = m
    while minl >= 12:
        if 12.0 / s >= fraction * short:
            scales.append(s)
        s *= factor
        minl *= factor
    return scales


def generate_boxes(
    reg: torch.Tensor, prob: torch.Tensor, scale: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net map cells above ``threshold`` -> candidate boxes in image coordinates.

    reg (B, 4, h, w), prob (B, h, w) -> boxes (n, 9) [x1, y1, x2, y2, score, 4 offsets] in the
    MATLAB code's 1-based inclusive coordinates, image index (n,).
    """
    stride, cell = 2, 12
    idx = (prob >= threshold).nonzero()  # (n, 3): image, row, col
    img = idx[:, 0]
    score = prob[img, idx[:, 1], idx[:, 2]]
    offsets = reg[img, :, idx[:, 1], idx[:, 2]]  # (n, 4)
    xy = idx[:, [2, 1]].to(reg.dtype)  # (n, 2): col, row
    q1 = torch.floor((stride * xy + 1) / scale)
    q2 = torch.floor((stride * xy + cell) / scale)
    return torch.cat([q1, q2, score[:, None], offsets], dim=1), img


def calibrate(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool = True) -> torch.Tensor:
    """Apply regressed offsets (n, 4) (fractions of width/height) to boxes (n, >=4)."""
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    wh = torch.stack([w, h, w, h], dim=1)
    return torch.cat([boxes[:, :4] + offsets * wh, boxes[:, 4:]], dim=1)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow boxes (n, >=4) to squares of side max(w, h) around the same centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.cat([torch.stack([x1, y1, x1 + side, y1 + side], 1), boxes[:, 4:]], dim=1)


def nms_min(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, thr: float) -> np.ndarray:
    """Greedy NMS by intersection over the smaller box, per group (MTCNN's last stage).

    boxes (n, 4) 1-based inclusive, scores (n,), groups (n,) -> kept indices, best first.
    """
    order = np.lexsort((-scores, groups))
    keep: list[int] = []
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    for g in np.unique(groups):
        idx = order[groups[order] == g]
        while idx.size:
            i = idx[0]
            keep.append(int(i))
            rest = idx[1:]
            xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
            yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
            xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
            yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
            inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
            over = inter / np.minimum(area[i], area[rest])
            idx = rest[over <= thr]
    return np.array(keep, dtype=np.int64)


# --------------------------------------------------------------------------- detector

Net = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
"""A torch net or its onnxruntime session (``facecl.align.mtcnn_onnx.OrtNet``)."""


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, best score first."""

    boxes: np.ndarray  # (n, 4) float32 x1, y1, x2, y2 (0-based pixel coordinates)
    scores: np.ndarray  # (n,) float32 O-Net face probability
    landmarks: np.ndarray  # (n, 5, 2) float32 (x, y): eyes, nose, mouth corners

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        )

    def scaled(self, sx: float, sy: float) -> Detections:
        """Map coordinates of a resized image back: ``x_orig = (x + 0.5) * sx - 0.5``."""
        f = np.array([sx, sy], np.float32)
        b = (self.boxes.reshape(-1, 2, 2) + 0.5) * f - 0.5
        lm = (self.landmarks + 0.5) * f - 0.5
        return Detections(b.reshape(-1, 4).astype(np.float32), self.scores, lm.astype(np.float32))


class MTCNN:
    """Batched MTCNN. ``detect(images)`` on a list of (H, W, 3) uint8 RGB arrays."""

    def __init__(
        self,
        min_face: float = 20.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: torch.device | str = "cpu",
        max_side: int = 1000,
        pixel_budget: int = 24_000_000,
        crop_batch: int = 8192,
        weights: Path | None = None,
        backend: str = "auto",
        net_batch: int | None = None,
        pnet_pixels: int | None = None,
        min_face_fraction: float = 0.2,
    ):
        if not 0 < factor < 1:
            raise ValueError(f"pyramid factor must be in (0, 1), got {factor}")
        if backend not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"unknown MTCNN backend {backend!r}: auto, torch or onnxruntime")
        self.min_face = float(min_face)
        self.min_face_fraction = float(min_face_fraction)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.device = torch.device(device)
        self.max_side = int(max_side)
        self.pixel_budget = int(pixel_budget)
        self.crop_batch = int(crop_batch)
        on_cpu = self.device.type == "cpu"
        # On the CPU the nets run in cache-sized pieces: R-/O-Net on 64 crops and P-Net on
        # ~160k pixels per call are 1.5-1.8x faster than whole batches, whose activations
        # spill out of L2 (the pooling and PReLU layers are memory bound; docs/benchmarks.md).
        # A GPU wants the whole batch.
        self.net_batch = int(net_batch or (64 if on_cpu else self.crop_batch))
        self.pnet_pixels = int(pnet_pixels or (160_000 if on_cpu else self.pixel_budget))
        self._pool: Any = None  # threads of _roi_align, made on first use
        self._pool_size = 0
        nets = load_nets(self.device, weights)
        self.pnet: Net
        self.rnet: Net
        self.onet: Net
        # auto: torch everywhere (in cache-sized pieces it is faster than onnxruntime on the
        # CPU); onnxruntime on request, CPU only (its CUDA provider is not used here)
        self.backend = "onnxruntime" if on_cpu and backend == "onnxruntime" else "torch"
        if self.backend == "onnxruntime":
            from facecl.align.mtcnn_onnx import onnx_nets

            self.pnet, self.rnet, self.onet = onnx_nets(nets)
        else:
            self.pnet, self.rnet, self.onet = nets

    # ----------------------------------------------------------------- public

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """Faces in each image (H, W, 3) uint8 RGB; one :class:`Detections` per image.

        Images larger than ``max_side`` are reduced for detection and the coordinates mapped
        back to the original, so memory stays bounded.
        """
        import cv2

        work: list[np.ndarray] = []
        back: list[tuple[float, float] | None] = []
        for im in images:
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected (H, W, 3) uint8 RGB, got {im.shape} {im.dtype}")
            h, w = im.shape[:2]
            if max(h, w) > self.max_side:
                r = self.max_side / max(h, w)
                nw, nh = max(1, round(w * r)), max(1, round(h * r))
                work.append(cv2.resize(im, (nw, nh), interpolation=cv2.INTER_AREA))
                back.append((w / nw, h / nh))
            else:
                work.append(im)
                back.append(None)
        dets = self._detect(work)
        return [d if b is None else d.scaled(*b) for d, b in zip(dets, back, strict=True)]

    # ----------------------------------------------------------------- stages

    @torch.inference_mode()
    def _detect(self, images: list[np.ndarray]) -> list[Detections]:
        n = len(images)
        if n == 0:
            return []
        # group equal sizes, split each group to respect the pixel budget
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape[:2], []).append(i)
        batches: list[tuple[list[int], list[torch.Tensor]]] = []
        for (h, w), idx in groups.items():
            per = max(1, self.pixel_budget // (h * w))
            for s in range(0, len(idx), per):
                part = idx[s : s + per]
                arr = np.stack([images[i] for i in part])  # (B, H, W, 3)
                t = torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float()
                batches.append((part, _area_pyramid(t)))  # [(B, 3, H, W) raw 0..255, /2, ..]

        # stage 1: P-Net on each batch's pyramid
        cand, cand_img = [], []
        for part, pyramid in batches:
            boxes, img = self._stage1(pyramid[0])
            if len(boxes):
                cand.append(boxes)
                cand_img.append(torch.as_tensor(part, device=self.device)[img])
        if not cand:
            return [Detections.empty() for _ in range(n)]
        boxes = torch.cat(cand)  # (m, 5) 1-based x1 y1 x2 y2 score
        img = torch.cat(cand_img)  # (m,) global image index

        # stage 2: R-Net on 24x24 crops of all candidates of all images
        crops = self._crops(batches, boxes, img, 24)
        offsets, prob = self._run(self.rnet, crops)
        keep = prob > self.thresholds[1]
        boxes, img, offsets = boxes[keep], img[keep], offsets[keep]
        boxes[:, 4] = prob[keep]
        if len(boxes) == 0:
            return [Detections.empty() for _ in range(n)]
        keep = _batched_nms(boxes, img, 0.7)
        boxes, img = calibrate(boxes[keep], offsets[keep]), img[keep]
        boxes = square(boxes)

        # stage 3: O-Net on 48x48 crops -> boxes and landmarks
        crops = self._crops(batches, boxes, img, 48)
        offsets, lms, prob = self._run(self.onet, crops)
        keep = prob > self.thresholds[2]
        boxes, img, offsets, lms = boxes[keep], img[keep], offsets[keep], lms[keep]
        boxes[:, 4] = prob[keep]
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        # O-Net gives positions relative to the crop (0 = left/top edge, 1 = right/bottom
        # edge). The crop's left edge is x1 - 1.5 in 0-based pixel-centre coordinates.
        lx = bw * lms[:, :5] + boxes[:, 0:1] - 1.5
        ly = bh * lms[:, 5:] + boxes[:, 1:2] - 1.5
        points = torch.stack([lx, ly], dim=2)  # (k, 5, 2)
        boxes = calibrate(boxes, offsets)

        b = boxes.cpu().numpy().astype(np.float64)
        im_np = img.cpu().numpy()
        keep_np = nms_min(b[:, :4], b[:, 4], im_np, 0.7)
        b, im_np, pts = b[keep_np], im_np[keep_np], points.cpu().numpy()[keep_np]
        out = []
        for i in range(n):
            sel = np.nonzero(im_np == i)[0]
            out.append(
                Detections(
                    (b[sel, :4] - [1.5, 1.5, 0.5, 0.5]).astype(np.float32),
                    b[sel, 4].astype(np.float32),
                    pts[sel].astype(np.float32),
                )
            )
        return out

    def _stage1(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid of a batch (B, 3, H, W) -> boxes (m, 5), image index (m,)."""
        h, w = t.shape[2:]
        all_boxes, all_img = [], []
        for scale in pyramid_scales(h, w, self.min_face, self.factor, self.min_face_fraction):
            hs, ws = math.ceil(h * scale), math.ceil(w * scale)
            x = F.interpolate(t, size=(hs, ws), mode="area")
            x = ((x - DETECTOR_MEAN) * DETECTOR_SCALE).contiguous(memory_format=torch.channels_last)
            reg, prob = self._run(self.pnet, x, max(1, self.pnet_pixels // (hs * ws)))
            boxes, img = generate_boxes(reg, prob, scale, self.thresholds[0])
            if len(boxes) == 0:
                continue
            keep = _batched_nms(boxes, img, 0.5)
            all_boxes.append(boxes[keep])
            all_img.append(img[keep])
        if not all_boxes:
            return torch.zeros(0, 5, device=t.device), torch.zeros(
                0, dtype=torch.long, device=t.device
            )
        boxes, img = torch.cat(all_boxes), torch.cat(all_img)
        keep = _batched_nms(boxes, img, 0.7)
        boxes, img = boxes[keep], img[keep]
        boxes = square(calibrate(boxes, boxes[:, 5:9], plus_one=False)[:, :5])
        return boxes, img

    def _crops(
        self,
        batches: list[tuple[list[int], list[torch.Tensor]]],
        boxes: torch.Tensor,
        img: torch.Tensor,
        size: int,
    ) -> torch.Tensor:
        """Crops (m, 3, size, size), normalised, of boxes (m, >=4) in 1-based inclusive
        coordinates; black outside the image (the original code's zero padding).

        Each crop is cut with ``roi_align`` (2x2 bilinear samples per output pixel) from the
        level of the batch's 2x area pyramid where the box is 1-2x the crop size, which
        approximates area resampling at a bounded cost for any face size.
        """

        out = torch.zeros(len(boxes), 3, size, size, device=boxes.device)
        side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) + 1
        level = torch.floor(torch.log2((side / size).clamp(min=1.0))).long()
        n_img = int(img.max()) + 1
        for part, pyramid in batches:
            pos = torch.full((n_img,), -1, dtype=torch.long, device=boxes.device)
            part_t = torch.as_tensor(part, device=boxes.device)
            inside = part_t < n_img
            pos[part_t[inside]] = torch.arange(len(part), device=boxes.device)[inside]
            lv = level.clamp(max=len(pyramid) - 1)
            for k, t in enumerate(pyramid):
                sel = ((pos[img] >= 0) & (lv == k)).nonzero()[:, 0]
                if len(sel) == 0:
                    continue
                b = boxes[sel]
                # 1-based inclusive pixel box -> pixel-edge coordinates at level k
                rois = torch.stack(
                    [pos[img[sel]].to(b.dtype), b[:, 0] - 1, b[:, 1] - 1, b[:, 2], b[:, 3]], 1
                )
                for s in range(0, len(rois), self.crop_batch):
                    chunk = rois[s : s + self.crop_batch]
                    out[sel[s : s + self.crop_batch]] = self._roi_align(t, chunk, size, 0.5**k)
        out = (out - DETECTOR_MEAN) * DETECTOR_SCALE
        return out.contiguous(memory_format=torch.channels_last)

    def _roi_align(
        self, t: torch.Tensor, rois: torch.Tensor, size: int, scale: float
    ) -> torch.Tensor:
        """``roi_align`` (2x2 samples per output pixel); on the CPU, whose kernel is serial,
        split over torch's threads (it releases the GIL; each crop is computed alone, so the
        result is the same)."""
        from torchvision.ops import roi_align

        def one(r: torch.Tensor) -> torch.Tensor:
            return roi_align(
                t, r, (size, size), spatial_scale=scale, sampling_ratio=2, aligned=True
            )

        n = torch.get_num_threads() if t.device.type == "cpu" else 1
        if n < 2 or len(rois) < 64:
            return one(rois)
        if self._pool is None or self._pool_size != n:
            from concurrent.futures import ThreadPoolExecutor

            self._pool, self._pool_size = ThreadPoolExecutor(n, "facecl-roi"), n
        return torch.cat(list(self._pool.map(one, rois.tensor_split(n))))

    def _run(self, net: Net, x: torch.Tensor, per: int | None = None) -> tuple[torch.Tensor, ...]:
        """``net`` on ``x`` in pieces of ``per`` (default ``net_batch``) along the batch."""
        per = per or self.net_batch
        if len(x) <= per:
            return net(x)
        parts = [net(x[s : s + per]) for s in range(0, len(x), per)]
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))


def _area_pyramid(t: torch.Tensor, min_side: int = 24) -> list[torch.Tensor]:
    """[t, t/2, t/4, ...]: 2x2 area averages (edge pixels averaged over what exists)."""
    levels = [t]
    while min(levels[-1].shape[2:]) >= 2 * min_side:
        levels.append(F.avg_pool2d(levels[-1], 2, ceil_mode=True, count_include_pad=False))
    return levels


def _batched_nms(boxes: torch.Tensor, img: torch.Tensor, thr: float) -> torch.Tensor:
    """Indices kept by IoU NMS within each image (boxes (n, >=5), score in column 4)."""
    from torchvision.ops import batched_nms

    # torchvision's IoU uses edge coordinates; the 1-based inclusive boxes span +1 pixel
    b = boxes[:, :4].clone()
    b[:, 2:] += 1
    return batched_nms(b, boxes[:, 4], img, thr)
