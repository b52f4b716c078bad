"""Frames in: decoding images and checking that a frame is something the pipeline can use.

Frames are RGB ``uint8`` arrays of shape (H, W, 3). Anything else (corrupt bytes, a
non-image file, a frame of the wrong shape) is refused here with a clear error, so the
stages after this never see it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import FrameError, ImageDecodeError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})


@dataclass(frozen=True)
class Frame:
    """One captured frame: RGB pixels, the camera's name and a monotonic timestamp (seconds)."""

    image: np.ndarray
    camera: str
    timestamp: float
    index: int = 0


def decode_image(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) into an RGB uint8 array; grey and RGBA are converted."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file, not an image")
    buf = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR)  # always 3-channel BGR, drops alpha
    if image is None:
        raise ImageDecodeError(f"{name}: not a decodable image (corrupt or unsupported format, {len(data)} bytes)")
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def load_image(path: Path | str) -> np.ndarray:
    """Read and decode an image file into RGB uint8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return decode_image(data, name=str(path))


def check_frame(image: object) -> np.ndarray:
    """Return ``image`` as a contiguous RGB uint8 (H, W, 3) array, or raise FrameError saying what is wrong."""
    if not isinstance(image, np.ndarray):
        raise FrameError(f"frame must be a numpy array, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise FrameError(f"frame must be (H, W, 3) RGB, got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        raise FrameError(f"frame must be uint8, got {image.dtype}")
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise FrameError(f"frame too small to hold a face: {image.shape[1]}x{image.shape[0]}")
    return np.ascontiguousarray(image)
