"""YuNet (libfacedetection) on TFLite: an anchor-free small-face detector with 5 landmarks.

The network (rebuilt from the ``yuface`` wheel by tools/build_yunet.py) is fully convolutional:
it runs at any input whose sides are multiples of 32 and returns, per level (strides 8, 16
and 32), a map of class and objectness logits, a box (dx, dy, log w, log h) and 5 landmarks
(dx, dy), in units of the stride around each cell's top-left corner. Decoding and NMS follow
libfacedetection's ``detection_output``: score = sqrt(sigmoid(cls) * sigmoid(obj)), hard NMS.

One pass covers the whole frame at the scale where the smallest wanted face (``min_face_px``)
is ``min_face_input_px`` wide at the input, but never below the full-frame input size (large
faces) and never enlarged more than 2x. With camera ``regions`` the full-frame pass stays for
large faces and each region gets its own fine pass. Every pass always runs: a large false
detection never stands in for a small real face.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.detectors.base import MAX_INPUT_SIZES, Detection, Reach, Region, nms_detections
from edge.detectors.blazeface import BlazeFaceDetector
from edge.runtime import LoadedModel

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
REFINE_CONTEXT = 2  # second-look crop side, in face widths (a fixed input, so one interpreter serves every face)
# Landmark order (subject's right eye appears on the image's left), as ArcFace's 5-point template.
RIGHT_EYE, LEFT_EYE, NOSE, RIGHT_MOUTH, LEFT_MOUTH = range(5)


class YuNetSettings(BaseModel):
    """Settings only YuNet has (``[recognition.detector.yunet]``)."""

    model_config = ConfigDict(extra="forbid")

    full_frame_px: int = Field(
        320,
        ge=160,
        le=1920,
        description="Longest input side (pixels, rounded up to a multiple of 32) of the pass that sees the whole "
        "frame; the pass grows when min_face_px needs more pixels.",
    )
    nms_iou: float | None = Field(None, gt=0, lt=1, description="Overlap above which boxes merge; empty = the model's.")
    verify_with: str | None = Field(
        "blazeface-full-range",
        description="Detector model that must confirm each YuNet face on a crop around it (enlarged so the face is "
        "verify_face_px wide): YuNet alone fires on face-like objects (a headlight, an animal); empty = no check.",
    )
    verify_score: float | None = Field(
        None,
        ge=0.05,
        le=0.99,
        description="Confirming detector's score a face needs; empty = the yunet manifest entry's verify_score.",
    )
    verify_face_px: float = Field(48.0, ge=16, le=128, description="Face width (input pixels) at which faces are confirmed.")
    refine_face_px: float | None = Field(
        96.0,
        ge=32,
        le=192,
        description="Every face is looked at again on a crop around it (twice its width), resized so the face is this "
        "wide at the input; a face the second look does not find at refine_score is dropped, and a face narrower than "
        "this takes its box, landmarks and score from the second look (a 30-60 px face's landmarks are a few pixels off "
        "at the first pass's scale, which costs the aligner); empty = no second look.",
    )
    refine_score: float = Field(
        0.7,
        ge=0.05,
        le=0.99,
        description="YuNet score a face needs at the second look (real faces there: 0.88 and up on the development "
        "distant scenes; face-like objects mostly below 0.75).",
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(x.astype(np.float32), -80.0, 80.0)))
    return out


def decode(
    maps: Sequence[np.ndarray], threshold: float, strides: Sequence[int] = STRIDES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4) as x1, y1, x2, y2, landmarks (N, 5, 2) and scores (N,) in input pixels above ``threshold``."""
    boxes, points, scores = [], [], []
    for out, stride in zip(maps, strides, strict=True):
        o = out[0]
        score = np.sqrt(_sigmoid(o[..., 0]) * _sigmoid(o[..., 1]))
        ys, xs = np.nonzero(score >= threshold)
        if ys.size == 0:
            continue
        cell = o[ys, xs].astype(np.float32)
        prior = np.stack([xs, ys], axis=1).astype(np.float32) * stride
        centre = cell[:, 2:4] * stride + prior
        half = np.exp(np.clip(cell[:, 4:6], -10.0, 10.0)) * stride / 2
        boxes.append(np.concatenate([centre - half, centre + half], axis=1))
        points.append(cell[:, 6:16].reshape(-1, 5, 2) * stride + prior[:, None, :])
        scores.append(score[ys, xs])
    if not scores:
        return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), np.zeros(0, np.float32)
    return np.concatenate(boxes), np.concatenate(points), np.concatenate(scores)


def hard_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int = 1000) -> list[int]:
    """Indices kept by greedy NMS (libfacedetection's: best first, drop overlaps above ``iou_threshold``)."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


class _Quantisation:
    """The model's input and output encoding: float32 as is, or integer (int8 YuNet) with a scale and zero point each."""

    def __init__(self, dtype: np.dtype, input_q: tuple[float, int] | None, output_q: list[tuple[float, int] | None]) -> None:
        self.dtype, self.input_q, self.output_q = dtype, input_q, output_q
        self.zero_pixel = 0 if input_q is None else input_q[1]  # the integer that means pixel value 0

    @classmethod
    def of(cls, model: LoadedModel) -> _Quantisation:
        inp = model.input_details()
        return cls(np.dtype(inp["dtype"]), model.quantisation(inp), [model.quantisation(d) for d in model.output_details()])

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        if self.input_q is None:
            return rgb
        scale, zero = self.input_q
        if scale == 1.0 and zero == -128 and self.dtype == np.int8 and rgb.dtype == np.uint8:
            return (rgb ^ np.uint8(0x80)).view(np.int8)  # pixel - 128 in one pass (float maths: ~17 ms at 1024x576)
        info = np.iinfo(self.dtype)
        out: np.ndarray = np.clip(np.rint(rgb.astype(np.float32) / scale + zero), info.min, info.max).astype(self.dtype)
        return out

    def maps(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        return [m if q is None else (m.astype(np.float32) - q[1]) * q[0] for m, q in zip(raw, self.output_q, strict=True)]


class YuNetDetector:
    """YuNet: one pass at the scale ``min_face_px`` needs (plus region passes), decoded in numpy."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        score_threshold: float | None = None,
        min_face_px: float | None = None,
        close_face_retry: bool = True,
        settings: YuNetSettings | None = None,
        verifier: BlazeFaceDetector | None = None,
    ) -> None:
        extra = model.spec.extra
        settings = settings or YuNetSettings()
        self.name = model.spec.name
        self.model = model
        self.multiple = int(extra.get("input_multiple", 32))
        self.full_frame_px = -(-settings.full_frame_px // self.multiple) * self.multiple
        self.score_threshold = float(score_threshold if score_threshold is not None else extra["score_threshold"])
        self.nms_iou = float(settings.nms_iou if settings.nms_iou is not None else extra["nms_iou"])
        self.retry_score_threshold = max(self.score_threshold, float(extra.get("retry_score_threshold", 0.0)))
        self.close_face_retry = close_face_retry
        self.reach = Reach.of(extra, self.full_frame_px, min_face_px)
        self.verifier = verifier
        self.verify_face_px = settings.verify_face_px
        self.refine_face_px = settings.refine_face_px
        self.refine_score = settings.refine_score
        # The bar: configured, else the manifest's (measured for this pairing), else the verifier's own threshold.
        listed = extra.get("verify_score")
        self.verify_score = settings.verify_score if settings.verify_score is not None else listed
        if verifier is not None and self.verify_score is None:
            self.verify_score = verifier.score_threshold
        self.verify_score = None if self.verify_score is None else float(self.verify_score)
        self._models: dict[tuple[int, int], LoadedModel] = {(int(model.input_shape[1]), int(model.input_shape[2])): model}
        self._io = _Quantisation.of(model)

    def detect(self, image: np.ndarray, regions: Sequence[Region] | None = None) -> list[Detection]:
        h, w = image.shape[:2]
        full = self.full_frame_px / max(h, w)
        fine = self.reach.fine_scale(w, h)
        if regions:
            faces = self._run(image, (0, 0, w, h), full, self.score_threshold)
            if fine is not None:
                for region in regions:
                    faces += self._run(image, region, fine, self.score_threshold)
                faces = nms_detections(faces, self.nms_iou)
        else:
            faces = self._run(image, (0, 0, w, h), max(full, fine or 0.0), self.score_threshold)
        faces = self._confirmed(image, self._refined(image, faces))
        if not faces and self.close_face_retry:
            # A face filling the frame is larger than most training faces: try it smaller, with a border.
            retry = self._run(image, (0, 0, w, h), full / 2, self.retry_score_threshold, border=True)
            faces = self._confirmed(image, [(face, face) for face in retry])
        return faces

    def _refined(self, image: np.ndarray, faces: list[Detection]) -> list[tuple[Detection, Detection]]:
        """The faces as a second, closer look sees them (each with its first-pass detection); faces it does not
        find are dropped.

        At the first pass's scale a 30-60 px face is 16-32 input pixels wide: its landmarks are a few
        pixels off, and a loose duplicate box around a small face can survive NMS because it barely
        overlaps (then, as the largest "face", it can stand in for the real one). Looked at again at
        ``refine_face_px`` the landmarks settle, a duplicate converges onto its face (merged by NMS
        below), and YuNet is far less sure of what it took for a face from afar (a headlight, an
        animal). Faces at least ``refine_face_px`` wide are only checked. One fixed input size, so
        one interpreter serves every face.
        """
        if self.refine_face_px is None:
            return [(face, face) for face in faces]
        side = -(-round(REFINE_CONTEXT * self.refine_face_px) // self.multiple) * self.multiple
        pairs = []
        for face in faces:
            fw = face.width
            scale = self.refine_face_px / max(fw, 1.0)
            cx, cy = (float(v) for v in face.box[:2] + face.box[2:] / 2)
            half = side / scale / 2
            region = (round(cx - half), round(cy - half), round(2 * half), round(2 * half))
            near = [
                d
                for d in self._run(image, region, scale, self.refine_score, size=(side, side))
                if np.hypot(*(d.box[:2] + d.box[2:] / 2 - (cx, cy))) < fw / 2
            ]
            if near:
                # A face the look enlarged takes its geometry from it; a larger one keeps the first pass's, which
                # saw it at least as large (on photos those landmarks align better).
                pairs.append((max(near, key=lambda d: d.score) if fw < self.refine_face_px else face, face))
        kept = nms_detections([refined for refined, _ in pairs], self.nms_iou)
        return [pair for pair in pairs if any(pair[0] is k for k in kept)]

    def _confirmed(self, image: np.ndarray, pairs: list[tuple[Detection, Detection]]) -> list[Detection]:
        """The faces the verifier also finds, scored by it (YuNet's box and landmarks are kept).

        Each face is tried on its box and, if that fails and the second look moved it, on the first pass's:
        BlazeFace's score on a 30-40 px face swings by about 0.1 with the crop, so two crops confirm a
        real face more steadily than one.
        """
        if self.verifier is None or self.verify_score is None:
            return [face for face, _ in pairs]
        out = []
        for face, first in pairs:
            again = self.verifier.redetect(image, face.box, self.verify_score, self.verify_face_px)
            if again is None and first is not face:
                again = self.verifier.redetect(image, first.box, self.verify_score, self.verify_face_px)
            if again is not None:
                out.append(Detection(box=face.box, keypoints=face.keypoints, score=again.score))
        return out

    def _model(self, height: int, width: int) -> LoadedModel:
        key = (height, width)
        model = self._models.pop(key, None)
        if model is None:
            model = self.model.with_input_size(height, width)
            # A camera keeps one frame size; photos of many sizes (eval, enrolment) must not pile up interpreters.
            if len(self._models) > MAX_INPUT_SIZES:
                del self._models[next(iter(self._models))]
        self._models[key] = model  # most recently used last
        return model

    def _run(
        self,
        image: np.ndarray,
        region: Region,
        scale: float,
        threshold: float,
        *,
        border: bool = False,
        size: tuple[int, int] | None = None,
    ) -> list[Detection]:
        """Detections in ``region`` of ``image`` resized by ``scale`` (centred in a wider input when ``border``;
        top-left in an input of ``size`` (height, width) when given, cut to fit)."""
        h, w = image.shape[:2]
        x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
        x1, y1 = min(w, int(region[0] + region[2])), min(h, int(region[1] + region[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return []
        nw, nh = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
        if size is not None:
            nh, nw = min(nh, size[0]), min(nw, size[1])
        part = image[y0:y1, x0:x1]
        resized = cv2.resize(part, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        m = self.multiple
        pad_w, pad_h = (nw, nh) if not border else (2 * nw, 2 * nh)
        in_w, in_h = max(m, -(-pad_w // m) * m), max(m, -(-pad_h // m) * m)
        if size is not None:
            in_h, in_w = size
        ox, oy = ((in_w - nw) // 2, (in_h - nh) // 2) if border else (0, 0)
        canvas = np.full((1, in_h, in_w, 3), self._io.zero_pixel, dtype=self._io.dtype)  # zero padding, as libfacedetection pads
        canvas[0, oy : oy + nh, ox : ox + nw] = self._io.pixels(resized)
        maps = self._io.maps(self._model(in_h, in_w).run(canvas))
        boxes, points, scores = decode(self._by_stride(maps), threshold)
        if scores.size == 0:
            return []
        offset = np.array([ox, oy], dtype=np.float32)
        origin = np.array([x0, y0], dtype=np.float32)
        limit = np.array([w, h], dtype=np.float32)
        faces = []
        for i in hard_nms(boxes, scores, self.nms_iou):
            x1y1 = np.clip((boxes[i, :2] - offset) / scale + origin, 0, limit)
            x2y2 = np.clip((boxes[i, 2:] - offset) / scale + origin, 0, limit)
            wh = x2y2 - x1y1
            if wh[0] < 2 or wh[1] < 2:
                continue
            kps = ((points[i] - offset) / scale + origin).astype(np.float32)
            faces.append(Detection(box=np.concatenate([x1y1, wh]), keypoints=kps, score=float(scores[i])))
        return faces

    @staticmethod
    def _by_stride(maps: list[np.ndarray]) -> list[np.ndarray]:
        """The three output maps ordered by stride (largest map first), whatever order the file lists them in."""
        return sorted(maps, key=lambda a: -a.shape[1] * a.shape[2])
