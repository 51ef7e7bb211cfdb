"""Choosing the face of a photo among several detections (pure numpy)."""

from __future__ import annotations

import numpy as np


def face_priority(boxes: np.ndarray, height: int, width: int, weight: float = 2.0) -> np.ndarray:
    """Box area minus ``weight`` x squared distance of its centre from the image centre.

    The LFW convention (facenet's align_dataset_mtcnn): prefer big faces near the centre.
    boxes (n, 4) x1, y1, x2, y2 -> (n,) priority, higher is better.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - (width - 1) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - (height - 1) / 2
    return area - weight * (cx**2 + cy**2)


def rank_faces(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Indices of all faces, best first (stable for ties)."""
    return np.argsort(-face_priority(boxes, height, width), kind="stable")
