"""Change gating: which parts of a frame differ from the previous one, measured on a small grey copy.

A pole camera mostly sees an empty, static scene. Differencing a ~160 px wide, blurred grey
copy of each frame against the previous one costs well under a millisecond and tells the
pipeline whether anything moved and where, so the detector (and its expensive fine pass for
small faces) only runs where something can be found. Sensor noise and JPEG artefacts are
averaged away by the subsampling and the blur; a change must also cover a few pixels of the
small copy to count. A JPEG frame is decoded for this at an eighth or a quarter of its size,
grey only (``edge.sources.JpegPicture``): the full decode is paid only where the detector runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from edge.config import MotionSettings
from edge.sources import Picture, RawPicture

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels


@dataclass(frozen=True)
class Change:
    """What changed since the previous frame: the changed share of the picture and boxes around it."""

    fraction: float
    boxes: list[Box]
    first: bool = False  # no previous frame to compare with: treat everything as changed

    @property
    def moved(self) -> bool:
        return self.first or bool(self.boxes)


def merge_boxes(boxes: list[Box], gap: int) -> list[Box]:
    """Merge boxes that overlap or lie within ``gap`` pixels of each other (repeated until stable)."""
    out = [list(b) for b in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if (
                    a[0] - gap <= b[0] + b[2]
                    and b[0] - gap <= a[0] + a[2]
                    and a[1] - gap <= b[1] + b[3]
                    and b[1] - gap <= a[1] + a[3]
                ):
                    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
                    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
                    out[i] = [x0, y0, x1 - x0, y1 - y0]
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return [(b[0], b[1], b[2], b[3]) for b in out]


def clip_box(box: Box, width: int, height: int) -> Box | None:
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[0] + box[2]), min(height, box[1] + box[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 - x0 >= 8 and y1 - y0 >= 8 else None


class MotionGate:
    """Frame differencing for one camera (not thread-safe: one gate per camera)."""

    def __init__(self, settings: MotionSettings) -> None:
        self.s = settings
        self._previous: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None

    def step(self, width: int, height: int) -> int:
        """Frame pixels per pixel of the small copy."""
        return max(1, round(max(width, height) / self.s.width))

    def update(self, image: np.ndarray | Picture) -> Change:
        """Compare a frame (its pixels, or a ``Picture`` that decodes only the small grey copy) with the previous one."""
        picture = RawPicture(image) if isinstance(image, np.ndarray) else image
        w, h = picture.width, picture.height
        step = self.step(w, h)
        # The blur averages away sensor noise and JPEG artefacts the subsampling kept.
        small = cv2.GaussianBlur(picture.grey(step), (5, 5), 0)
        previous, self._previous = self._previous, small
        if previous is None or previous.shape != small.shape or self._shape != (h, w):
            self._shape = (h, w)
            return Change(1.0, [(0, 0, w, h)], first=True)
        mask = (cv2.absdiff(small, previous) > self.s.threshold).astype(np.uint8)
        changed = int(mask.sum())
        fraction = changed / mask.size
        if changed < self.s.min_pixels:
            return Change(fraction, [])
        grown = cv2.dilate(mask, np.ones((3, 3), np.uint8))
        count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        boxes: list[Box] = []
        # A moving blob is a body, a head or part of one: grow it so the face above a moving body is inside.
        pad = self.s.pad_px
        for x, y, bw, bh, area in stats[1:count]:
            if area < self.s.min_pixels:
                continue
            box = clip_box(
                (int(x * step) - pad, int(y * step) - pad - int(bh * step // 2), int(bw * step) + 2 * pad,
                 int(bh * step * 1.5) + 2 * pad),
                w, h,
            )  # fmt: skip
            if box is not None:
                boxes.append(box)
        return Change(fraction, merge_boxes(boxes, pad))
