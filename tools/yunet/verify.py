"""The TFLite YuNet models against libfacedetection itself (``yuface.detect``) on the same pixels.

Each image is run through both at its own size (padded to multiples of 32, as libfacedetection
does); yuface returns integer boxes and landmarks and a score in percent. A yuface face is paired
with the TFLite face it overlaps most (IoU >= ``pair_iou``); the report gives, per set (development
photos, distant scenes), the share of yuface faces paired (recall), box-corner and landmark errors
(worst and 95th percentile, in pixels and in face widths), score differences and TFLite-only faces.

Tolerances (``Tolerance``): the float16 model must reproduce yuface (every face, 2 px, 0.02 of score);
the int8 model is held to what 8-bit activations allow, in face widths so small and large faces count alike.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.detectors.base import corner_iou
from edge.detectors.yunet import decode, hard_nms
from edge.runtime import resize_input_flatbuffer
from tools import tflite_convert

FACES = Path(os.environ.get("EDGE_DEV_DATA", "/work/shared/data/faces"))
DISTANT = Path(os.environ.get("EDGE_DISTANT_DIR", "build/distant"))
THRESHOLD, NMS_IOU = 0.5, 0.3  # libfacedetection's detection_output
MAX_SIDE = 960  # yuface's own advice; larger frames are shrunk first (both see the same pixels)


@dataclass(frozen=True)
class Tolerance:
    """What agreement with yuface means for one model."""

    pair_iou: float = 0.7  # a yuface face and a TFLite face at least this IoU are the same face
    recall: float = 1.0  # share of yuface faces with a TFLite twin
    box_px: float = 2.0  # worst box corner, pixels (after truncating to yuface's integers)
    landmark_px: float = 2.0
    box_width: float = 1.0  # 95th percentile box corner error, in face widths
    landmark_width: float = 1.0
    score: float = 0.02  # worst score difference
    extra: int = 0  # TFLite-only faces above the threshold + extra_margin
    extra_margin: float = 0.02


FLOAT16 = Tolerance()
# int8: 8-bit activations move boxes and landmarks by up to about a tenth of the face (95th percentile
# measured 0.08 on the photos, 0.10-0.11 on 20-30 px distant faces) and scores by a few hundredths; the
# bounds leave a little room above the figures in docs/models.md. Pixel bounds do not apply (faces of all sizes).
INT8 = Tolerance(pair_iou=0.5, recall=0.97, box_px=1e9, landmark_px=1e9, box_width=0.12, landmark_width=0.12, score=0.10, extra=3)


def default_images() -> dict[str, list[Path]]:
    photos = []
    for name in ("faces.csv", "group_photos.csv"):
        with (FACES / name).open(encoding="utf-8") as fh:
            photos += [FACES / r["path"] for r in csv.DictReader(fh)]
    return {"photos": photos, "distant": sorted(DISTANT.glob("scenes/**/*.jpg"))[:40]}


def detect(model: bytes, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, landmarks and scores of ``model`` on ``rgb`` (padded to multiples of 32), libfacedetection's decoding."""
    h, w = rgb.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    interp = tflite_convert.interpreter(resize_input_flatbuffer(model, (1, 320, 320, 3), ph, pw))
    interp.allocate_tensors()
    canvas = np.zeros((1, ph, pw, 3), np.float32)
    canvas[0, :h, :w] = rgb
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], tflite_convert.quantise(canvas, inp))
    interp.invoke()
    outs = [tflite_convert.dequantise(interp.get_tensor(d["index"]), d) for d in interp.get_output_details()]
    boxes, points, scores = decode(sorted(outs, key=lambda a: -a.size), THRESHOLD)
    keep = hard_nms(boxes, scores, NMS_IOU)
    return boxes[keep], points[keep], scores[keep]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(corner_iou(np.asarray(a, np.float64), np.asarray(b, np.float64)[None])[0])


@dataclass
class Agreement:
    """One model's agreement with yuface over a set of images."""

    images: int = 0
    faces: int = 0
    paired: int = 0
    extra: int = 0
    box_px: list[float] = field(default_factory=list)
    landmark_px: list[float] = field(default_factory=list)
    box_width: list[float] = field(default_factory=list)
    landmark_width: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)

    def line(self, name: str) -> str:
        def q(values: list[float], fmt: str) -> str:
            return "-" if not values else f"{max(values):{fmt}} / {np.percentile(values, 95):{fmt}}"

        recall = self.paired / self.faces if self.faces else 1.0
        return (
            f"{name:9s} {self.images:3d} images, {self.faces:3d} yuface faces, recall {recall:6.1%}, "
            f"{self.extra} TFLite-only; worst / p95: box {q(self.box_px, '.1f')} px ({q(self.box_width, '.3f')} w), "
            f"landmarks {q(self.landmark_px, '.1f')} px ({q(self.landmark_width, '.3f')} w), score {q(self.score, '.3f')}"
        )

    def passes(self, tol: Tolerance) -> bool:
        def worst(values: list[float]) -> float:
            return max(values, default=0.0)

        def p95(values: list[float]) -> float:
            return float(np.percentile(values, 95)) if values else 0.0

        return (
            (self.paired >= tol.recall * self.faces if tol.recall < 1 else self.paired == self.faces)
            and self.extra <= tol.extra
            and worst(self.box_px) <= tol.box_px
            and worst(self.landmark_px) <= tol.landmark_px
            and p95(self.box_width) <= tol.box_width
            and p95(self.landmark_width) <= tol.landmark_width
            and worst(self.score) <= tol.score
        )


def compare(model: bytes, paths: list[Path], tol: Tolerance, *, quiet: bool = False) -> Agreement:
    import yuface

    found = Agreement()
    for path in paths:
        bgr = cv2.imread(str(path))
        if bgr is None:
            raise SystemExit(f"unreadable {path}")
        scale = MAX_SIDE / max(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        confs, rects, marks = yuface.detect(np.ascontiguousarray(bgr), conf=THRESHOLD)
        boxes, points, scores = detect(model, bgr[:, :, ::-1].astype(np.float32))
        found.images += 1
        used: set[int] = set()
        for conf, rect, mark in zip(confs, rects, marks, strict=True):
            found.faces += 1
            ref = np.array([rect[0], rect[1], rect[0] + rect[2], rect[1] + rect[3]], np.float64)
            match = max(range(len(boxes)), key=lambda i: _iou(ref, boxes[i]), default=None)
            if match is None or _iou(ref, boxes[match]) < tol.pair_iou:
                if not quiet:
                    print(f"MISS {path.name}: yuface face {rect.tolist()} ({conf}%) has no TFLite twin")
                continue
            found.paired += 1
            used.add(match)
            width = max(float(rect[2]), 1.0)
            # yuface truncates to integers: compare against the truncated TFLite values.
            box = float(np.abs(np.trunc(boxes[match]) - ref).max())
            kp = float(np.abs(np.trunc(points[match].ravel()) - mark.astype(np.float64)).max())
            found.box_px.append(box)
            found.landmark_px.append(kp)
            found.box_width.append(box / width)
            found.landmark_width.append(kp / width)
            found.score.append(abs(float(scores[match]) - float(conf) / 100))
        # yuface reports only faces whose truncated percent score clears the bar; ours near the bar may differ.
        found.extra += sum(1 for i in range(len(boxes)) if i not in used and scores[i] > THRESHOLD + tol.extra_margin)
    return found


def verify(models: dict[str, tuple[Path, Tolerance]], images: list[Path] | None) -> int:
    """Print each model's agreement with yuface per set; 1 when one falls outside its tolerance."""
    sets = {"images": images} if images else default_images()
    failures = 0
    for name, (path, tol) in models.items():
        if not path.is_file():
            print(f"{name}: {path.name} absent, skipped")
            continue
        model = path.read_bytes()
        total = Agreement()
        for set_name, paths in sets.items():
            part = compare(model, paths, tol, quiet=tol.recall < 1)
            print(f"{name}: {part.line(set_name)}")
            for key, value in vars(part).items():
                setattr(total, key, getattr(total, key) + value)
        good = total.passes(tol)
        failures += 0 if good else 1
        print(f"{'ok      ' if good else 'BAD     '} {name}: {'within' if good else 'outside'} its tolerance {tol}")
    return 1 if failures else 0
