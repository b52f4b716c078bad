"""The fixed calibration inputs of the int8 YuNet: development photos and distant scenes, listed with hashes.

``calibration.csv`` (beside this file) lists every image and its sha256; the build refuses an image
whose bytes differ, so the same list gives the same model. Each image becomes one 320x320 input
as the detector would present it:

- ``photo`` (development faces, group photos and face-free images of ../shared/data/faces):
  the full-frame pass, longest side scaled to 320 and zero padding right and bottom;
- ``distant`` (every other scene of ``tools/build_distant_set.py --out build/distant``, itself made
  from ../shared/data only): a 320x320 window of the fine pass (scale 16/30: a 30 px face is
  16 input pixels) centred on the scene's labelled face.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np

from tools.yunet.convert import INPUT_SIZE

LISTING = Path(__file__).with_name("calibration.csv")
FACES = Path(os.environ.get("EDGE_DEV_DATA", "/work/shared/data/faces"))
DISTANT = Path(os.environ.get("EDGE_DISTANT_DIR", "build/distant"))
FINE_SCALE = 16 / 30  # the detector's fine pass at its default min_face_px (30) and min_face_input_px (16)


def roots() -> dict[str, Path]:
    return {"photo": FACES, "distant": DISTANT}


def select() -> list[tuple[str, str]]:
    """(set, path) of the calibration images as the listing was made: all development photos, every other scene."""
    chosen = []
    for name in ("faces.csv", "group_photos.csv", "nonfaces.csv"):
        with (FACES / name).open(encoding="utf-8") as fh:
            chosen += [("photo", r["path"]) for r in csv.DictReader(fh)]
    with (DISTANT / "truth.csv").open(encoding="utf-8") as fh:
        chosen += [("distant", r["path"]) for r in list(csv.DictReader(fh))[::2]]
    return chosen


def write_listing() -> None:
    rows = [(s, p, hashlib.sha256((roots()[s] / p).read_bytes()).hexdigest()) for s, p in select()]
    with LISTING.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["set", "path", "sha256"])
        out.writerows(rows)


def _truth() -> dict[str, tuple[float, float, float, float]]:
    with (DISTANT / "truth.csv").open(encoding="utf-8") as fh:
        return {r["path"]: (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"])) for r in csv.DictReader(fh)}


def _photo_input(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = INPUT_SIZE / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return canvas


def _distant_input(rgb: np.ndarray, face: tuple[float, float, float, float]) -> np.ndarray:
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (round(w * FINE_SCALE), round(h * FINE_SCALE)), interpolation=cv2.INTER_AREA)
    cx, cy = (face[0] + face[2] / 2) * FINE_SCALE, (face[1] + face[3] / 2) * FINE_SCALE
    x0 = int(np.clip(round(cx) - INPUT_SIZE // 2, 0, max(0, small.shape[1] - INPUT_SIZE)))
    y0 = int(np.clip(round(cy) - INPUT_SIZE // 2, 0, max(0, small.shape[0] - INPUT_SIZE)))
    window = small[y0 : y0 + INPUT_SIZE, x0 : x0 + INPUT_SIZE]
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    canvas[: window.shape[0], : window.shape[1]] = window
    return canvas


def inputs() -> list[np.ndarray]:
    """The listed images as [1, 320, 320, 3] float32 RGB inputs, in listing order; refuses changed images."""
    with LISTING.open(encoding="utf-8") as fh:
        listing = list(csv.DictReader(fh))
    truth = _truth() if any(r["set"] == "distant" for r in listing) else {}
    out = []
    for row in listing:
        path = roots()[row["set"]] / row["path"]
        if not path.is_file():
            hint = " (python tools/build_distant_set.py --out build/distant)" if row["set"] == "distant" else ""
            raise SystemExit(f"calibration image {path} is missing{hint}")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise SystemExit(f"calibration image {path} differs from {LISTING.name}: another model would result")
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"calibration image {path} is unreadable")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        sample = _photo_input(rgb) if row["set"] == "photo" else _distant_input(rgb, truth[row["path"]])
        out.append(sample[None])
    return out
