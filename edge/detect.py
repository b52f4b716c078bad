"""Face detection: the ``Detector`` interface and BlazeFace (MediaPipe) on TFLite.

BlazeFace returns, per anchor, a box and 6 keypoints relative to the anchor centre,
plus a logit. Decoding follows MediaPipe's SSD anchor scheme; overlapping boxes are
merged with MediaPipe's weighted NMS (score-weighted average of the cluster), which
gives steadier keypoints than hard NMS and so steadier alignment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from edge.runtime import LoadedModel

log = logging.getLogger(__name__)

# Keypoint order in BlazeFace's output (subject's right eye appears on the image's left).
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


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


class Detector(Protocol):
    """Finds faces in an RGB frame."""

    name: str

    @property
    def min_face_px(self) -> float:
        """Smallest face width (frame pixels of a full-frame pass on a 1920-wide frame / per input side) it finds."""
        ...

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def make_anchors(input_size: int, strides: list[int], anchors_per_cell: list[int]) -> np.ndarray:
    """Anchor centres (N, 2) in [0, 1], in MediaPipe's order (layer, row, column, anchor)."""
    centres = []
    for stride, per_cell in zip(strides, anchors_per_cell, strict=True):
        grid = int(np.ceil(input_size / stride))
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        c = np.stack([(xs + 0.5) / grid, (ys + 0.5) / grid], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
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
        overlap = _iou(corners[top], corners[remaining])
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
        suppressed |= _iou(corners[i], corners) > iou_threshold
    return keep


class BlazeFaceDetector:
    """BlazeFace on a letterboxed frame, with a second, zoomed-out pass for faces that fill the frame.

    A face that fills the whole picture (a close-up or a tight crop) is larger than anything
    the model saw in training, so when the first pass finds nothing the frame is shrunk to
    half the input with a black border around it and tried again.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        close_face_retry: bool = True,
    ) -> None:
        extra = model.spec.extra
        self.name = model.spec.name
        self.model = model
        self.size = int(model.input_shape[1])
        anchors = extra["anchors"]
        self.anchors = make_anchors(self.size, anchors["strides"], anchors["anchors_per_cell"])
        self.box_scale = float(anchors["box_scale"])
        self.score_threshold = float(score_threshold if score_threshold is not None else extra["score_threshold"])
        self.nms_iou = float(nms_iou if nms_iou is not None else extra["nms_iou"])
        self.min_face_fraction = float(extra.get("min_face_fraction", 0.1))
        self.close_face_retry = close_face_retry
        # The zoomed-out retry sees more background texture: ask it for more confidence.
        self.retry_score_threshold = max(self.score_threshold, float(extra.get("retry_score_threshold", 0.0)))
        shapes = [self.model.interpreter.get_tensor(i).shape for i in model.output_indices]
        # Output order differs between the two exports: pick regressors/scores by shape.
        self._reg_pos = next(i for i, s in enumerate(shapes) if s[-1] == 16)
        self._score_pos = next(i for i, s in enumerate(shapes) if s[-1] == 1)
        if len(self.anchors) != shapes[self._reg_pos][1]:
            raise ValueError(f"{self.name}: {len(self.anchors)} anchors for {shapes[self._reg_pos][1]} outputs")

    @property
    def min_face_px(self) -> float:
        """Smallest findable face as a share of the frame's longer side times the input size (pixels of input)."""
        return self.min_face_fraction * self.size

    def detect(self, image: np.ndarray) -> list[Detection]:
        faces = self._detect_once(image, fill=1.0, threshold=self.score_threshold)
        if not faces and self.close_face_retry:
            faces = self._detect_once(image, fill=0.5, threshold=self.retry_score_threshold)
        return faces

    def _detect_once(self, image: np.ndarray, fill: float, threshold: float) -> list[Detection]:
        h, w = image.shape[:2]
        scale = self.size * fill / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image, (nw, nh), interpolation=interp)
        ox, oy = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.zeros((self.size, self.size, 3), dtype=np.float32)
        canvas[oy : oy + nh, ox : ox + nw] = resized
        tensor = (canvas / 127.5 - 1.0)[None]
        outputs = self.model.run(tensor)
        raw, logits = outputs[self._reg_pos][0], outputs[self._score_pos][0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -80.0, 80.0)))
        idx = np.nonzero(scores >= threshold)[0]
        if idx.size == 0:
            return []
        raw, scores, anchors = raw[idx], scores[idx], self.anchors[idx]
        centre = raw[:, 0:2] / self.box_scale + anchors
        half = raw[:, 2:4] / self.box_scale / 2.0
        corners = np.concatenate([centre - half, centre + half], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) / self.box_scale + anchors[:, None, :]
        faces = []
        offset = np.array([ox, oy], dtype=np.float32)
        for box, kp, score in weighted_nms(corners, kps, scores, self.nms_iou):
            x1y1 = (box[:2] * self.size - offset) / scale
            x2y2 = (box[2:] * self.size - offset) / scale
            x1y1 = np.clip(x1y1, 0, [w, h])
            x2y2 = np.clip(x2y2, 0, [w, h])
            wh = x2y2 - x1y1
            if wh[0] < 2 or wh[1] < 2:
                continue
            points = (kp * self.size - offset) / scale
            faces.append(Detection(box=np.concatenate([x1y1, wh]), keypoints=points.astype(np.float32), score=score))
        return faces
