"""dlib itself as the reference: its detector, 5-point shape predictor, face chips and descriptors.

Needs ``dlib`` (PyPI ``dlib-bin``) and ``face_recognition_models`` 0.3.0. The package's
``__init__`` imports ``pkg_resources`` (gone from recent setuptools), so its files are
located through the import system without importing it.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "face_recognition_models"
RESNET_FILE = "models/dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "models/shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 150
CHIP_PADDING = 0.25


class ReferenceUnavailableError(RuntimeError):
    """dlib or face_recognition_models is not installed."""


def package_file(relative: str) -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailableError(f"{PACKAGE} is not installed (pip install {PACKAGE}==0.3.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ReferenceUnavailableError(f"{path} is missing from the installed {PACKAGE}")
    return path


def _dlib() -> Any:
    try:
        import dlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ReferenceUnavailableError("dlib is not installed (pip install dlib-bin)") from exc
    return dlib


def _rotate(centre: np.ndarray, p: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    d = p - centre
    out: np.ndarray = centre + np.array([c * d[0] - s * d[1], s * d[0] + c * d[1]])
    return out


def mapping_to_chip(details: Any) -> np.ndarray:
    """dlib's get_mapping_to_chip: the 2×3 affine taking image pixels to chip pixels."""
    rect = details.rect
    angle = float(details.angle)
    rows, cols = int(details.rows), int(details.cols)
    centre = np.array([(rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2])
    corners = [np.array([rect.left(), rect.top()]), np.array([rect.right(), rect.top()]), np.array([rect.right(), rect.bottom()])]
    src = np.array([_rotate(centre, p, angle) for p in corners])
    dst = np.array([[0, 0], [cols - 1, 0], [cols - 1, rows - 1]], dtype=np.float64)
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


@dataclass
class ReferenceFace:
    path: Path
    identity: str
    image: np.ndarray  # the full RGB photo
    landmarks: np.ndarray  # dlib's 5 points (x, y): right eye corners, left eye corners, nose base
    chip: np.ndarray  # 150×150 RGB, dlib.get_face_chip(padding=0.25)
    descriptor: np.ndarray  # dlib's 128-d face descriptor of ``chip``
    to_chip: np.ndarray  # 2×3 affine: image pixels to chip pixels, exactly as dlib extracted the chip


class DlibReference:
    def __init__(self) -> None:
        dlib = _dlib()
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(str(package_file(SHAPE_FILE)))
        self.encoder = dlib.face_recognition_model_v1(str(package_file(RESNET_FILE)))

    def face(self, path: Path, identity: str = "") -> ReferenceFace | None:
        """The largest face dlib finds in ``path`` (upsampling once if none), or None."""
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            return None
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        boxes = list(self.detector(rgb, 0)) or list(self.detector(rgb, 1))
        if not boxes:
            return None
        box = max(boxes, key=lambda b: b.width() * b.height())
        shape = self.shapes(rgb, box)
        details = self.dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        chip = np.asarray(self.dlib.extract_image_chip(rgb, details))
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        descriptor = np.asarray(self.encoder.compute_face_descriptor(chip), dtype=np.float32)
        return ReferenceFace(path, identity, rgb, points, chip, descriptor, mapping_to_chip(details))

    def faces(self, manifest: Path, limit: int | None = None) -> list[ReferenceFace]:
        """Reference faces of a ``path,identity`` manifest, in file order."""
        out: list[ReferenceFace] = []
        with manifest.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows[:limit]:
            face = self.face(manifest.parent / row["path"], row["identity"])
            if face is None:
                log.info("dlib finds no face in %s", row["path"])
                continue
            out.append(face)
        return out
