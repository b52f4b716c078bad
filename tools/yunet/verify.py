"""The TFLite YuNet against libfacedetection itself (``yuface.detect``) on the same pixels.

Each image is run through both at its own size (padded to multiples of 32, as libfacedetection
does); yuface returns integer boxes and landmarks and a score in percent, so agreement means:
every yuface face has a TFLite face (IoU >= 0.7 to pair them), box corners and landmarks within 2 px and
the score within 0.02, and no TFLite face above the threshold lacks a yuface twin.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np

from edge.detectors.yunet import decode, hard_nms
from edge.runtime import resize_input_flatbuffer

FACES = Path(os.environ.get("EDGE_DEV_DATA", "/work/shared/data/faces"))
THRESHOLD, NMS_IOU = 0.5, 0.3  # libfacedetection's detection_output
MAX_SIDE = 960  # yuface's own advice; larger frames are shrunk first (both see the same pixels)


def default_images() -> list[Path]:
    rows = []
    for name in ("faces.csv", "group_photos.csv"):
        with (FACES / name).open(encoding="utf-8") as fh:
            rows += [FACES / r["path"] for r in csv.DictReader(fh)]
    distant = Path(os.environ.get("EDGE_DISTANT_DIR", "build/distant"))
    scenes = sorted(distant.glob("scenes/**/*.jpg"))[:40]
    return rows + scenes


def _tflite(model: bytes, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from ai_edge_litert import interpreter

    h, w = rgb.shape[:2]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    interp = interpreter.Interpreter(model_content=resize_input_flatbuffer(model, (1, 320, 320, 3), ph, pw))
    interp.allocate_tensors()
    canvas = np.zeros((1, ph, pw, 3), np.float32)
    canvas[0, :h, :w] = rgb
    interp.set_tensor(interp.get_input_details()[0]["index"], canvas)
    interp.invoke()
    maps = sorted((interp.get_tensor(d["index"]) for d in interp.get_output_details()), key=lambda a: -a.size)
    boxes, points, scores = decode(maps, THRESHOLD)
    keep = hard_nms(boxes, scores, NMS_IOU)
    return boxes[keep], points[keep], scores[keep]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def verify(model_path: Path, images: list[Path] | None) -> int:
    import yuface

    model = model_path.read_bytes()
    paths = images or default_images()
    faces = misses = extra = 0
    worst_box = worst_kp = worst_score = 0.0
    for path in paths:
        bgr = cv2.imread(str(path))
        if bgr is None:
            print(f"unreadable {path}")
            return 1
        scale = MAX_SIDE / max(bgr.shape[:2])
        if scale < 1:
            bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        confs, rects, marks = yuface.detect(np.ascontiguousarray(bgr), conf=THRESHOLD)
        boxes, points, scores = _tflite(model, bgr[:, :, ::-1].astype(np.float32))
        used: set[int] = set()
        for conf, rect, mark in zip(confs, rects, marks, strict=True):
            faces += 1
            ref = np.array([rect[0], rect[1], rect[0] + rect[2], rect[1] + rect[3]], np.float64)
            match = max(range(len(boxes)), key=lambda i: _iou(ref, boxes[i]), default=None)
            if match is None or _iou(ref, boxes[match]) < 0.7:
                misses += 1
                print(f"MISS {path.name}: yuface face {rect.tolist()} ({conf}%) has no TFLite twin")
                continue
            used.add(match)
            # yuface truncates to integers: compare against the truncated TFLite values.
            worst_box = max(worst_box, float(np.abs(np.trunc(boxes[match]) - ref).max()))
            worst_kp = max(worst_kp, float(np.abs(np.trunc(points[match].ravel()) - mark.astype(np.float64)).max()))
            worst_score = max(worst_score, abs(float(scores[match]) - float(conf) / 100))
        # yuface reports only faces whose truncated percent score clears the bar; ours near the bar may differ.
        extra += sum(1 for i in range(len(boxes)) if i not in used and scores[i] > THRESHOLD + 0.02)
    print(
        f"{len(paths)} images, {faces} yuface faces: {misses} without a TFLite twin, {extra} TFLite-only faces; "
        f"worst box corner {worst_box:.1f} px, landmark {worst_kp:.1f} px, score {worst_score:.3f}"
    )
    return 0 if misses == 0 and extra == 0 and worst_box <= 2 and worst_kp <= 2 and worst_score <= 0.02 else 1
