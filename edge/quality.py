"""Face quality: size, sharpness and rough yaw, measured once and carried with the face.

These values gate which faces are matched at all and raise the threshold for faces that
are small, blurred or turned, where a match is less reliable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from edge.detectors import blazeface, yunet
from edge.detectors.base import Detection


@dataclass(frozen=True)
class Quality:
    """Per-face quality values (as they travel in hit payloads)."""

    size_px: float  # face box width in frame pixels
    sharpness: float  # variance of the Laplacian of the aligned grey crop
    yaw: float  # degrees, rough: 0 frontal, ±90 profile (sign: towards the image's right is positive)
    detector_score: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in asdict(self).items()}


def estimate_yaw(keypoints: np.ndarray) -> float:
    """Rough yaw from where the nose sits between the ears (BlazeFace; falls back to the eyes) or the eyes (YuNet)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if len(kp) == 5:
        # No ears: the ears are about twice as far apart as the eyes, so half the ear span ~ the eye span.
        right, left, nose = kp[yunet.RIGHT_EYE], kp[yunet.LEFT_EYE], kp[yunet.NOSE]
        half = abs(left[0] - right[0])
    else:
        right, left, nose = kp[blazeface.RIGHT_EAR], kp[blazeface.LEFT_EAR], kp[blazeface.NOSE]
        if abs(left[0] - right[0]) < 1e-6:
            right, left = kp[blazeface.RIGHT_EYE], kp[blazeface.LEFT_EYE]
        half = abs(left[0] - right[0]) / 2.0
    if half < 1e-6:
        return 90.0
    # Nose offset from the midpoint as a share of half the span ~ sin(yaw).
    ratio = (nose[0] - (right[0] + left[0]) / 2.0) / half
    return float(np.degrees(np.arcsin(np.clip(ratio, -1.0, 1.0))))


def sharpness(crop: np.ndarray) -> float:
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def measure(detection: Detection, crop: np.ndarray) -> Quality:
    return Quality(
        size_px=detection.width,
        sharpness=sharpness(crop),
        yaw=estimate_yaw(detection.keypoints),
        detector_score=detection.score,
    )


@dataclass(frozen=True)
class QualityGate:
    """Faces below these values are not matched (and never leave the process)."""

    min_size_px: float = 24.0
    min_sharpness: float = 10.0
    max_abs_yaw: float = 60.0
    min_detector_score: float = 0.6

    def reasons(self, q: Quality) -> list[str]:
        """Why a face fails the gate (empty when it passes)."""
        out = []
        if q.size_px < self.min_size_px:
            out.append(f"face {q.size_px:.0f}px < {self.min_size_px:.0f}px")
        if q.sharpness < self.min_sharpness:
            out.append(f"sharpness {q.sharpness:.1f} < {self.min_sharpness:.1f}")
        if abs(q.yaw) > self.max_abs_yaw:
            out.append(f"yaw {q.yaw:.0f}° beyond ±{self.max_abs_yaw:.0f}°")
        if q.detector_score < self.min_detector_score:
            out.append(f"detector score {q.detector_score:.2f} < {self.min_detector_score:.2f}")
        return out

    def passes(self, q: Quality) -> bool:
        return not self.reasons(q)
