"""Alignment: warp a face onto its embedder's template with a similarity transform.

BlazeFace gives eyes, nose tip and mouth centre (no mouth corners), so those four points
are fitted to the template by a least-squares similarity (Umeyama): rotation, uniform scale
and shift, no shear, so the face keeps its proportions. YuNet gives ArcFace's own five points
(eyes, nose tip, mouth corners): on ``arcface-112`` they are fitted directly; on a template
known only for four points the mouth corners' midpoint stands in for the mouth centre. The warp reads the full-resolution
frame, never a shrunken one. Each embedder names its template in the model manifest
(``input.alignment``):

- ``arcface-112``: the ArcFace 112×112 template (eyes, nose, midpoint of the mouth corners).
- ``dlib-chip-150``: dlib's ``get_face_chip(shape, size=150, padding=0.25)``, which dlib fits
  to its 5-point shape predictor (eye corners, nose base). Where BlazeFace's points fall on
  that chip was measured on the 93 development faces with dlib's own mapping
  (``python -m tools.dlib_resnet.template``; RMS spread 3-5 px per point, mostly BlazeFace's
  keypoint noise).
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.detectors import blazeface, yunet
from edge.errors import AlignmentError

# ArcFace / InsightFace 112×112 five-point template: eyes, nose, mouth corners.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATE_4 = np.vstack([ARCFACE_112[:3], ARCFACE_112[3:].mean(axis=0)])
CROP_SIZE = 112

# BlazeFace right eye, left eye, nose tip, mouth centre on dlib's 150 px face chip (padding 0.25).
DLIB_CHIP_150 = np.array([[46.04, 46.51], [100.27, 46.61], [73.00, 79.58], [72.93, 105.24]], dtype=np.float64)

# alignment name -> (4-point template, the crop size it is given in)
TEMPLATES: dict[str, tuple[np.ndarray, int]] = {
    "arcface-112": (TEMPLATE_4, CROP_SIZE),
    "dlib-chip-150": (DLIB_CHIP_150, 150),
}
DEFAULT_ALIGNMENT = "arcface-112"


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2×3 least-squares similarity mapping points ``src`` onto ``dst`` (Umeyama 1991)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = (s_c**2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def alignment_points(keypoints: np.ndarray) -> np.ndarray:
    """Eyes, nose tip and mouth centre in template order, from BlazeFace's 6 keypoints or YuNet's 5."""
    kp = np.asarray(keypoints, dtype=np.float64)
    if len(kp) == 5:
        mouth = (kp[yunet.RIGHT_MOUTH] + kp[yunet.LEFT_MOUTH]) / 2
        return np.vstack([kp[[yunet.RIGHT_EYE, yunet.LEFT_EYE, yunet.NOSE]], mouth])
    return kp[[blazeface.RIGHT_EYE, blazeface.LEFT_EYE, blazeface.NOSE, blazeface.MOUTH]]


def fit(keypoints: np.ndarray, alignment: str, size: int) -> np.ndarray:
    """The 2x3 similarity putting ``keypoints`` on the ``alignment`` template at ``size`` pixels."""
    if len(keypoints) == 5 and alignment == "arcface-112":
        return similarity_transform(np.asarray(keypoints, dtype=np.float64), ARCFACE_112 * (size / CROP_SIZE))
    return similarity_transform(alignment_points(keypoints), template(alignment, size))


def template(alignment: str, size: int) -> np.ndarray:
    """The 4-point template of ``alignment`` scaled to a ``size``×``size`` crop."""
    try:
        points, native = TEMPLATES[alignment]
    except KeyError:
        raise AlignmentError(f"unknown alignment {alignment!r}; known: {sorted(TEMPLATES)}") from None
    return points * (size / native)


def align_face(image: np.ndarray, keypoints: np.ndarray, size: int = CROP_SIZE, alignment: str = DEFAULT_ALIGNMENT) -> np.ndarray:
    """The face warped onto the ``alignment`` template: an RGB uint8 ``size``×``size`` crop."""
    m = fit(keypoints, alignment, size)
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    # Shrinking a large face by a big factor with bilinear sampling aliases; pre-blur by area first.
    if scale < 0.5:
        factor = max(1, int(1.0 / scale / 2))
        small = cv2.resize(image, (image.shape[1] // factor, image.shape[0] // factor), interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, :2] *= factor
        image = small
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
