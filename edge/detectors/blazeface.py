"""Face detection: the ``Detector`` interface and BlazeFace (MediaPipe) on TFLite.

BlazeFace returns, per anchor, a box and 6 keypoints relative to the anchor centre,
plus a logit. Decoding follows MediaPipe's SSD anchor scheme; overlapping boxes are
merged with MediaPipe's weighted NMS (score-weighted average of the cluster), which
gives steadier keypoints than hard NMS and so steadier alignment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge.detectors.base import MAX_INPUT_SIZES, Detection, Reach, Region, nms_detections, shrink, weighted_nms
from edge.runtime import LoadedModel

log = logging.getLogger(__name__)

# Keypoint order in BlazeFace's output (subject's right eye appears on the image's left).
RIGHT_EYE, LEFT_EYE, NOSE, MOUTH, RIGHT_EAR, LEFT_EAR = range(6)


REFINE_FACE_PX = 48.0  # a fine-pass face is re-measured at this width in the 192 px input


def make_anchors(height: int, width: int, strides: list[int], anchors_per_cell: list[int]) -> np.ndarray:
    """Anchor centres (N, 2) in input pixels, in MediaPipe's order (layer, row, column, anchor)."""
    centres = []
    for stride, per_cell in zip(strides, anchors_per_cell, strict=True):
        gh, gw = int(np.ceil(height / stride)), int(np.ceil(width / stride))
        ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        c = np.stack([(xs + 0.5) * width / gw, (ys + 0.5) * height / gh], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(c, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


@dataclass
class _Pass:
    """One input size of the detector: its interpreter and anchor centres (input pixels)."""

    model: LoadedModel
    anchors: np.ndarray
    height: int
    width: int


class BlazeFaceDetector:
    """BlazeFace: a full-frame pass, a fine pass at native resolution for small faces, a close-face retry.

    The full-frame pass shrinks the frame to the model's 192 px input, so on a 1080p frame
    it only sees faces wider than ~150 px. When ``min_face_px`` is smaller than that, a
    fine pass runs the same (fully convolutional) network on the frame (or on configured
    regions) scaled so a ``min_face_px`` face is ``min_face_input_px`` wide at the input:
    one large input instead of overlapping tiles, so no face is cut by a tile border and
    no pixel is computed twice. Detections of both passes are merged by NMS in frame pixels.

    A face that fills the whole picture (a close-up or a tight crop) is larger than anything
    the model saw in training, so when no pass finds anything the frame is shrunk to half
    the input with a black border around it and tried again.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        close_face_retry: bool = True,
        min_face_px: float | None = None,
    ) -> None:
        extra = model.spec.extra
        self.name = model.spec.name
        self.size = int(model.input_shape[1])
        anchors = extra["anchors"]
        self._strides, self._per_cell = list(anchors["strides"]), list(anchors["anchors_per_cell"])
        # Regressor outputs are in units of 1/box_scale of the 192 input: scale them to input pixels.
        self.px_per_unit = self.size / float(anchors["box_scale"])
        self.score_threshold = float(score_threshold if score_threshold is not None else extra["score_threshold"])
        self.nms_iou = float(nms_iou if nms_iou is not None else extra["nms_iou"])
        # Smallest face (input pixels) the model finds reliably; measured, see docs/models.md.
        self.reach = Reach.of(extra, self.size, min_face_px)
        self.input_multiple = int(extra.get("input_multiple", 0))  # 0: the model cannot take other input sizes
        self.close_face_retry = close_face_retry
        # The zoomed-out retry sees more background texture: ask it for more confidence.
        self.retry_score_threshold = max(self.score_threshold, float(extra.get("retry_score_threshold", 0.0)))
        if min_face_px is not None and not self.input_multiple:
            log.warning("detector %s cannot run a fine pass; faces below its full-frame minimum are not found", self.name)
        base = _Pass(model, make_anchors(self.size, self.size, self._strides, self._per_cell), self.size, self.size)
        self.model = model
        self._passes: dict[tuple[int, int], _Pass] = {(self.size, self.size): base}
        shapes = [model.interpreter.get_tensor(i).shape for i in model.output_indices]
        # Output order differs between the two exports: pick regressors/scores by shape.
        self._reg_pos = next(i for i, s in enumerate(shapes) if s[-1] == 16)
        self._score_pos = next(i for i, s in enumerate(shapes) if s[-1] == 1)
        if len(base.anchors) != shapes[self._reg_pos][1]:
            raise ValueError(f"{self.name}: {len(base.anchors)} anchors for {shapes[self._reg_pos][1]} outputs")

    def detect(self, image: np.ndarray, regions: Sequence[Region] | None = None) -> list[Detection]:
        h, w = image.shape[:2]
        scale = self.reach.fine_scale(w, h)
        base = self._passes[self.size, self.size]
        # The full-frame pass keeps OpenCV's area averaging: its keypoints are what alignment was tuned on.
        faces = self._run(image, (0, 0, w, h), self.size / max(h, w), base, self.score_threshold, area=True)
        # The fine pass only adds faces smaller than any the full-frame pass finds.
        if scale is not None:
            coarse_min = self.reach.full_frame_min(w, h)
            for region in regions or [(0, 0, w, h)]:
                # Faces the full-frame pass also sees come with good keypoints already.
                faces += [self._refine(image, f) if f.width < coarse_min else f for f in self._fine(image, region, scale)]
            faces = nms_detections(faces, self.nms_iou)
        if not faces and self.close_face_retry:
            half = 0.5 * self.size / max(h, w)
            faces = self._run(image, (0, 0, w, h), half, base, self.retry_score_threshold, centre=True, area=True)
        return faces

    def _fine(self, image: np.ndarray, region: Region, scale: float) -> list[Detection]:
        h, w = image.shape[:2]
        x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
        x1, y1 = min(w, int(region[0] + region[2])), min(h, int(region[1] + region[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            return []
        m = self.input_multiple
        in_w = max(self.size, -(-round((x1 - x0) * scale) // m) * m)
        in_h = max(self.size, -(-round((y1 - y0) * scale) // m) * m)
        p = self._pass(in_h, in_w)
        return self._run(image, (x0, y0, x1 - x0, y1 - y0), scale, p, self.score_threshold)

    def _refine(self, image: np.ndarray, face: Detection) -> Detection:
        """The same face re-detected at a comfortable size for steadier keypoints (alignment needs them).

        At 15 input pixels a face's keypoints are coarse; on a crop around it, enlarged so the face is
        ~48 px of the 192 input, they land within a pixel or two of where they are on a large face.
        """
        # A low bar: this only re-measures a face already found, it never adds one.
        best = self.redetect(image, face.box, 0.3)
        if best is None:
            return face
        return Detection(box=best.box, keypoints=best.keypoints, score=face.score)

    def redetect(self, image: np.ndarray, box: np.ndarray, threshold: float, face_px: float = REFINE_FACE_PX) -> Detection | None:
        """The best face at least ``threshold`` centred on ``box`` ([x, y, w, h]), the crop enlarged so it is
        ``face_px`` wide at the input; None when there is none. Also how another detector's faces are confirmed."""
        x, y, fw, fh = (float(v) for v in box)
        scale = face_px / max(fw, 1.0)
        side = self.size / scale
        cx, cy = x + fw / 2, y + fh / 2
        h, w = image.shape[:2]
        x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
        x1, y1 = min(w, int(cx + side / 2)), min(h, int(cy + side / 2))
        base = self._passes[self.size, self.size]
        again = self._run(image, (x0, y0, x1 - x0, y1 - y0), scale, base, threshold, centre=True, area=True)
        near = [d for d in again if (np.abs(d.box[:2] + d.box[2:] / 2 - (cx, cy)) < fw / 2).all()]
        return max(near, key=lambda d: d.score) if near else None

    def _pass(self, height: int, width: int) -> _Pass:
        key = (height, width)
        p = self._passes.pop(key, None)
        if p is None:
            model = self.model.with_input_size(height, width)
            p = _Pass(model, make_anchors(height, width, self._strides, self._per_cell), height, width)
            # A camera's frames keep one size; photos of many sizes (eval, enrolment) must not pile up interpreters.
            if len(self._passes) > MAX_INPUT_SIZES:
                del self._passes[next(k for k in self._passes if k != (self.size, self.size))]
        self._passes[key] = p  # most recently used last
        return p

    def _run(
        self,
        image: np.ndarray,
        region: Region,
        scale: float,
        p: _Pass,
        threshold: float,
        *,
        centre: bool = False,
        area: bool = False,
    ) -> list[Detection]:
        """Detections in ``region`` of ``image`` resized by ``scale`` onto ``p``'s input (top-left or centred).

        ``area``: reduce with area averaging (else ``shrink``'s Gaussian pyramid, which also keeps the fine
        pass's false detections on face-like textures down).
        """
        rx, ry, rw, rh = region
        nw, nh = min(p.width, max(1, round(rw * scale))), min(p.height, max(1, round(rh * scale)))
        part = image[ry : ry + rh, rx : rx + rw]
        if area:
            resized = cv2.resize(part, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        else:
            resized = shrink(part, (nw, nh))
        ox, oy = ((p.width - nw) // 2, (p.height - nh) // 2) if centre or p.width == self.size else (0, 0)
        canvas = np.full((1, p.height, p.width, 3), -1.0, dtype=np.float32)
        # Scaled straight into float32 (x / 127.5 - 1): float64 temporaries cost milliseconds at 1080p.
        view = canvas[0, oy : oy + nh, ox : ox + nw]
        np.multiply(resized, np.float32(1 / 127.5), out=view, dtype=np.float32)
        view -= np.float32(1.0)
        outputs = p.model.run(canvas)
        raw, logits = outputs[self._reg_pos][0], outputs[self._score_pos][0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -80.0, 80.0)))
        idx = np.nonzero(scores >= threshold)[0]
        if idx.size == 0:
            return []
        raw, scores, anchors = raw[idx] * self.px_per_unit, scores[idx], p.anchors[idx]
        centres = raw[:, 0:2] + anchors
        half = raw[:, 2:4] / 2.0
        corners = np.concatenate([centres - half, centres + half], axis=1)
        kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        faces = []
        offset = np.array([ox, oy], dtype=np.float32)
        origin = np.array([rx, ry], dtype=np.float32)
        limit = np.array([image.shape[1], image.shape[0]], dtype=np.float32)
        # NMS in input pixels: the same IoU rule whatever the pass.
        for box, kp, score in weighted_nms(corners, kps, scores, self.nms_iou):
            x1y1 = np.clip((box[:2] - offset) / scale + origin, 0, limit)
            x2y2 = np.clip((box[2:] - offset) / scale + origin, 0, limit)
            wh = x2y2 - x1y1
            if wh[0] < 2 or wh[1] < 2:
                continue
            points = (kp - offset) / scale + origin
            faces.append(Detection(box=np.concatenate([x1y1, wh]), keypoints=points.astype(np.float32), score=score))
        return faces
