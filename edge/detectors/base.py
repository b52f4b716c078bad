"""What every face detector shares: the ``Detector`` interface, ``Detection``, ``Reach`` and NMS."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Detection:
    """A face in frame pixels: box ``[x, y, w, h]``, 6 keypoints (x, y) and the detector's score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2])

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])

    def shifted(self, offset: np.ndarray) -> Detection:
        """The same face in a frame where the image it was found in starts at ``offset`` (x, y)."""
        box = self.box.copy()
        box[:2] += offset
        return Detection(box=box, keypoints=self.keypoints + offset, score=self.score)


class Detector(Protocol):
    """Finds faces in an RGB frame."""

    name: str

    def detect(self, image: np.ndarray, regions: Sequence[Region] | None = None) -> list[Detection]:
        """Faces in ``image``; ``regions`` ([x, y, w, h]) limit the search for small faces. Every pass always
        runs: a large face found (perhaps a false one: an animal, a poster) never stands in for a small real one."""
        ...


Region = tuple[int, int, int, int]
MAX_INPUT_SIZES = 4  # fine-pass interpreters kept (least recently used dropped)


@dataclass(frozen=True)
class Reach:
    """How small a face a detector finds: its input side, the smallest face at its input, the wanted minimum."""

    input_size: int
    min_input_px: float
    min_face_px: float | None  # configured; None = full-frame pass only

    @classmethod
    def of(cls, extra: dict[str, object], input_size: int, min_face_px: float | None) -> Reach:
        fraction = float(str(extra.get("min_face_fraction", 0.1)))
        min_input = float(str(extra.get("min_face_input_px", fraction * input_size)))
        # A model that cannot take other input sizes has no fine pass.
        return cls(input_size, min_input, min_face_px if extra.get("input_multiple") else None)

    def full_frame_min(self, width: int, height: int) -> float:
        """Smallest face (frame pixels) the full-frame pass finds in a ``width`` x ``height`` frame."""
        return self.min_input_px * max(width, height) / self.input_size

    def fine_scale(self, width: int, height: int) -> float | None:
        """Input pixels per frame pixel of the fine pass, or None when the full-frame pass is enough."""
        if self.min_face_px is None or self.full_frame_min(width, height) <= self.min_face_px:
            return None
        # Never upsample more than 2x: below that the frame has too few pixels per face anyway.
        return min(2.0, self.min_input_px / self.min_face_px)

    def smallest_face(self, width: int, height: int) -> float:
        """Smallest face (frame pixels) found in a ``width`` x ``height`` frame: what the framing check needs."""
        fine = self.fine_scale(width, height)
        return self.full_frame_min(width, height) if fine is None else self.min_input_px / fine


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (w, h), smoothed like area averaging when reduced.

    OpenCV's area averaging is fast only for whole-number factors (8 ms for 1080p to 0.53 here):
    halve with Gaussian pyramid steps while the result stays at least the target size, then
    finish with a small area reduction or a bilinear enlargement.
    """
    w, h = size
    while image.shape[1] >= 2 * w and image.shape[0] >= 2 * h:
        image = cv2.pyrDown(image)
    if image.shape[1] == w and image.shape[0] == h:
        return image
    shrinking = image.shape[1] > w or image.shape[0] > h
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def corner_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box against many."""
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


def weighted_nms(
    corners: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe-style weighted NMS: each cluster becomes its score-weighted mean, with the top score."""
    order = np.argsort(-scores)
    corners, keypoints, scores = corners[order], keypoints[order], scores[order]
    remaining = np.arange(len(scores))
    out = []
    while remaining.size:
        top = remaining[0]
        overlap = corner_iou(corners[top], corners[remaining])
        members = remaining[overlap > iou_threshold]
        w = scores[members][:, None]
        box = (corners[members] * w).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[top])))
        remaining = remaining[overlap <= iou_threshold]
    return out


def nms_detections(faces: list[Detection], iou_threshold: float) -> list[Detection]:
    """Merge detections of one face found in overlapping passes (tiles, retries): keep the best of each cluster."""
    if len(faces) < 2:
        return faces
    corners = np.array([[f.box[0], f.box[1], f.box[0] + f.box[2], f.box[1] + f.box[3]] for f in faces])
    order = np.argsort([-f.score for f in faces])
    keep: list[Detection] = []
    suppressed = np.zeros(len(faces), dtype=bool)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(faces[i])
        suppressed |= corner_iou(corners[i], corners) > iou_threshold
    return keep
