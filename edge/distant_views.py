"""Extra enrolment embeddings: an enrolled face as a distant camera would see it.

A watchlist photo is usually a sharp, large face, while a pole camera sees the same person 30-60 px
wide; the embedder maps the two a little apart. Each enrolled face is therefore also shrunk
(INTER_AREA) to a few distant sizes, placed in a plain full-HD scene, optionally JPEG-encoded, and
found, aligned and embedded by the analyser exactly as a probe would be. The entry then holds
these embeddings besides the photo's own, and its score is the max over them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.config import ENROL_VIEW_PX, EnrolViewSettings
from edge.measure.scenes import SCENE_SIZE, place_face

log = logging.getLogger(__name__)

# A face must be at least this much wider than a view's size to be shrunk to it (never enlarged).
MIN_SHRINK = 1.1


@dataclass(frozen=True)
class DistantViews:
    """Face widths (px) to add an embedding at, and the JPEG quality to record each view at (None: not encoded)."""

    sizes: tuple[int, ...] = (32, 48)
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        lo, hi = ENROL_VIEW_PX  # the bounds recognition.enrol_views has: a command line must not exceed them
        if any(not lo <= s <= hi for s in self.sizes):
            raise ValueError(f"view sizes {self.sizes}: each must be {lo} px to {hi} px")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality {self.jpeg_quality}: must be 1-100")

    @classmethod
    def from_settings(cls, settings: EnrolViewSettings) -> DistantViews | None:
        """The configured views (``recognition.enrol_views``), or None when its ``sizes`` are empty."""
        return cls(tuple(settings.sizes), settings.jpeg_quality) if settings.sizes else None


def calibration_mismatch(analyser: FaceAnalyser, views: DistantViews | None) -> str | None:
    """Why the embedder's calibrated threshold does not fit enrolment with ``views``, or None when it does.

    Views lift impostor scores as well as genuine ones, so the threshold must be calibrated with the same views.
    """
    spec = analyser.manifest.get(analyser.embedder.name)
    calibration = (spec.extra.get("threshold") or {}).get("calibration") or {}
    recorded = calibration.get("enrol_views")
    used = None if views is None else {"sizes": list(views.sizes), "jpeg_quality": views.jpeg_quality}
    if recorded == used:
        return None
    return (
        f"the {analyser.embedder.name} threshold was calibrated with enrolment views {recorded}, but enrolment uses {used}: "
        "run `edge calibrate` with the same recognition.enrol_views, or set them back"
    )


def view_scene(
    image: np.ndarray, box: np.ndarray, face_px: float, seed: int, jpeg_quality: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scene, placed box): ``image``'s face ``face_px`` wide in a plain, slightly noisy full-HD scene."""
    rng = np.random.default_rng(seed)
    w, h = SCENE_SIZE
    scene = rng.integers(90, 130, size=(h, w, 3), dtype=np.uint8)
    placed = np.asarray(place_face(scene, image, box, face_px, rng).box, dtype=np.float64)
    if jpeg_quality is not None:
        ok, data = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if ok:
            scene = np.asarray(cv2.imdecode(data, cv2.IMREAD_UNCHANGED))
    return scene, placed


def view_embeddings(
    analyser: FaceAnalyser, image: np.ndarray, box: np.ndarray, views: DistantViews, seed: int = 0
) -> list[np.ndarray]:
    """Embeddings of the face at ``box`` in ``image`` seen at each of ``views``' sizes (sizes it is not wider than skipped).

    Only a face found where it was placed counts, so a false detection in the scene is never enrolled.
    """
    out = []
    for k, px in enumerate(views.sizes):
        if float(box[2]) < MIN_SHRINK * px:
            continue
        scene, placed = view_scene(image, box, float(px), seed * 101 + k, views.jpeg_quality)
        cx, cy = placed[0] + placed[2] / 2, placed[1] + placed[3] / 2
        for face in analyser.analyse(scene, largest_only=True, apply_gate=False):
            x, y, fw, fh = (float(v) for v in face.detection.box)
            if x <= cx <= x + fw and y <= cy <= y + fh:
                out.append(face.embedding)
            else:
                log.debug("view at %d px: the face found is not the one placed", px)
    return out
