"""Frames in: decoding images and checking that a frame is something the pipeline can use.

Frames are RGB ``uint8`` arrays of shape (H, W, 3). Anything else (corrupt bytes, a
non-image file, a frame of the wrong shape) is refused here with a clear error, so the
stages after this never see it. Sources hand out a ``Picture``: pixels already decoded, or
a JPEG frame (MJPEG) that is decoded only as far as a stage looks at it; one whose bytes
turn out corrupt then is refused when first decoded, and counted as a bad frame.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from edge.errors import EdgeError, FrameError, ImageDecodeError
from edge.redact import redact

log = logging.getLogger(__name__)

# Larger than any camera this runs on (8K is 7680): a bigger "frame" is a corrupt header, not a picture.
MAX_FRAME_SIDE = 8192
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})


def decode_image(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) into an RGB uint8 array; grey and RGBA are converted."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file, not an image")
    buf = np.frombuffer(data, dtype=np.uint8)
    # Always 3-channel, alpha dropped; decoded straight to RGB (libjpeg writes RGB: no BGR copy to convert).
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ImageDecodeError(f"{name}: not a decodable image (corrupt or unsupported format, {len(data)} bytes)")
    return np.ascontiguousarray(image)


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
    check_size(int(image.shape[1]), int(image.shape[0]))
    return np.ascontiguousarray(image)


def check_size(width: int, height: int) -> None:
    """Raise FrameError unless a ``width`` x ``height`` frame can hold a face and is not a corrupt header."""
    if width < 16 or height < 16:
        raise FrameError(f"frame too small to hold a face: {width}x{height}")
    if max(width, height) > MAX_FRAME_SIDE:
        raise FrameError(f"frame too large: {width}x{height} (at most {MAX_FRAME_SIDE} px a side)")


# --- pictures: a frame's pixels, decoded only as far as they are needed -------------------------

# libjpeg decodes at 1/2, 1/4 or 1/8 scale in the DCT (far cheaper than decoding everything and shrinking).
_REDUCED_GREY = {8: cv2.IMREAD_REDUCED_GRAYSCALE_8, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2}


def subsampled_shape(width: int, height: int, step: int) -> tuple[int, int]:
    """(rows, columns) of a frame taken every ``step`` pixels: what ``Picture.grey(step)`` returns."""
    return -(-height // step), -(-width // step)


class Picture(Protocol):
    """A frame's pixels. ``rgb`` is the full frame; ``grey`` a small grey copy, one value per ``step`` pixels."""

    width: int
    height: int

    def rgb(self) -> np.ndarray: ...

    def grey(self, step: int) -> np.ndarray: ...


class RawPicture:
    """Pixels already in memory (a raw camera buffer, a decoded photo)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.height, self.width = int(image.shape[0]), int(image.shape[1])

    def rgb(self) -> np.ndarray:
        return self.image

    def grey(self, step: int) -> np.ndarray:
        # Strided subsampling is nearly free; the change gate's blur does the averaging.
        grey: np.ndarray = cv2.cvtColor(np.ascontiguousarray(self.image[::step, ::step]), cv2.COLOR_RGB2GRAY)
        return grey


class JpegPicture:
    """A JPEG frame as the camera or the file sent it: decoded in full only when the pipeline looks at the pixels.

    Most frames of a pole camera are only compared with the previous one (``grey``), which libjpeg
    decodes at an eighth or a quarter of the size, grey only: 2.5-3× cheaper than ``rgb`` (measured
    at 1080p; the Huffman decoding that remains is the same).
    The full decode is kept, so a frame is decoded at most once whichever stage asks.
    """

    def __init__(self, data: bytes, width: int, height: int) -> None:
        self.data = data
        self.width, self.height = width, height
        self._rgb: np.ndarray | None = None
        self._lock = threading.Lock()  # the detection stage and a test may ask at once; decode once

    def rgb(self) -> np.ndarray:
        with self._lock:
            if self._rgb is None:
                image = decode_image(self.data, name="frame")
                if image.shape[:2] != (self.height, self.width):
                    raise FrameError(f"frame is {image.shape[1]}x{image.shape[0]}, the stream said {self.width}x{self.height}")
                self._rgb = image
            return self._rgb

    def grey(self, step: int) -> np.ndarray:
        # Always from the JPEG (even when decoded in full): consecutive frames compared must be made alike.
        factor = max((f for f in _REDUCED_GREY if f <= step), default=1)
        buf = np.frombuffer(self.data, dtype=np.uint8)
        grey = cv2.imdecode(buf, _REDUCED_GREY.get(factor, cv2.IMREAD_GRAYSCALE)) if buf.size else None
        if grey is None:
            raise ImageDecodeError(f"frame: not a decodable JPEG ({len(self.data)} bytes)")
        rows, cols = subsampled_shape(self.width, self.height, step)
        if grey.shape != (rows, cols):
            grey = cv2.resize(grey, (cols, rows), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(grey)


def check_picture(picture: Picture) -> Picture:
    """``picture`` if the pipeline can use it (see ``check_frame``); a JPEG's size is checked without decoding it."""
    if isinstance(picture, JpegPicture):
        check_size(picture.width, picture.height)
        return picture
    return RawPicture(check_frame(picture.rgb()))


# --- frame sources ------------------------------------------------------------------------------


class SourceError(EdgeError):
    """A frame source cannot be opened or stopped delivering frames."""


class FrameSource(Protocol):
    """Where frames come from. ``read`` returns None at the end of a finite source (file, folder)."""

    camera: str
    live: bool  # a live source drops the oldest frames when the pipeline falls behind; a file waits
    media_fps: float | None  # frames per second of a recorded source (for its timestamps)
    stills: bool  # separate photos, not frames of one scene: each face is its own track

    def open(self) -> None: ...

    def read(self) -> Picture | None: ...

    def close(self) -> None: ...


class OpenCVSource:
    """A video file, an RTSP/HTTP stream or a V4L2 device index, through OpenCV.

    Motion JPEG through FFmpeg (an MJPEG AVI, an MJPEG stream) is handed out undecoded, as
    ``JpegPicture``: the pipeline decodes only what it looks at. Anything else is decoded here.
    """

    def __init__(self, camera: str, url: str, width: int | None = None, height: int | None = None) -> None:
        self.camera = camera
        self.url = url
        self.shown_url = redact(url)  # for messages: they reach the journal and the retained status
        self.width, self.height = width, height
        self.is_file = not url.isdigit() and "://" not in url
        self.live = not self.is_file
        self.stills = False
        self.media_fps: float | None = None
        self.encoded = False  # frames come as JPEG bytes (see the class docstring)
        self._cap: cv2.VideoCapture | None = None
        self._first: JpegPicture | None = None
        self._size = (0, 0)  # of encoded frames

    def _capture(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(int(self.url) if self.url.isdigit() else self.url)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"camera {self.camera}: cannot open {self.shown_url}")
        if self.width and self.height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        return cap

    def open(self) -> None:
        if self.is_file and not Path(self.url).is_file():
            raise SourceError(f"camera {self.camera}: video file {self.shown_url} not found")
        cap = self._capture()
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.media_fps = float(fps) if fps and 1 <= fps <= 240 else 25.0
        self.encoded, self._first = False, None
        if cap.getBackendName() == "FFMPEG" and int(cap.get(cv2.CAP_PROP_FOURCC)) == cv2.VideoWriter.fourcc(*"MJPG"):
            size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            # FFmpeg hands out the encoded packets (CAP_PROP_FORMAT -1). Kept only if the first is a JPEG libjpeg reads.
            first = self._packet(cap, size) if cap.set(cv2.CAP_PROP_FORMAT, -1) else None
            if first is not None:
                self.encoded, self._first, self._size = True, first, size
            else:
                cap.release()
                cap = self._capture()
                log.info("camera %s: MJPEG packets not readable as JPEG; decoding frames with FFmpeg", self.camera)
        self._cap = cap

    @staticmethod
    def _packet(cap: cv2.VideoCapture, size: tuple[int, int]) -> JpegPicture | None:
        ok, packet = cap.read()
        if not ok or packet is None:
            return None
        picture = JpegPicture(packet.tobytes(), *size)
        try:
            picture.grey(8)
        except ImageDecodeError:
            return None
        return picture

    def read(self) -> Picture | None:
        if self._cap is None:
            raise SourceError(f"camera {self.camera}: not open")
        if self._first is not None:
            first, self._first = self._first, None
            return first
        ok, frame = self._cap.read()
        if not ok or frame is None:
            if self.is_file:
                return None
            raise SourceError(f"camera {self.camera}: stream {self.shown_url} stopped delivering frames")
        if self.encoded:
            data = frame.tobytes()
            if not data.startswith(b"\xff\xd8"):
                raise ImageDecodeError(f"camera {self.camera}: a frame of {len(data)} bytes is not a JPEG")
            return JpegPicture(data, *self._size)
        return RawPicture(np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._first = None


class FolderSource:
    """A folder of still images in name order: photos to screen (``stills``), or recorded frames."""

    def __init__(self, camera: str, folder: Path, fps: float = 1.0, *, stills: bool = True) -> None:
        self.camera = camera
        self.folder = folder
        self.live = False
        self.stills = stills
        self.media_fps: float | None = fps
        self._files: list[Path] = []
        self._pos = 0

    def open(self) -> None:
        if not self.folder.is_dir():
            raise SourceError(f"camera {self.camera}: folder {self.folder} not found")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self._pos = 0

    def read(self) -> Picture | None:
        """The next image; ImageDecodeError for a file that is not one (the next call moves on to the next file)."""
        if self._pos >= len(self._files):
            return None
        path = self._files[self._pos]
        self._pos += 1
        return RawPicture(load_image(path))

    def close(self) -> None:
        self._files = []


class PiCameraSource:
    """The Raspberry Pi camera through picamera2 (imported here only: it exists only on Raspberry Pi OS)."""

    def __init__(self, camera: str, width: int | None, height: int | None) -> None:
        self.camera = camera
        self.live = True
        self.stills = False
        self.media_fps: float | None = None
        self.size = (width or 1920, height or 1080)
        self._cam: object | None = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(
                f"camera {self.camera}: picamera2 is not installed (Raspberry Pi OS: apt install python3-picamera2)"
            ) from exc
        try:
            cam = Picamera2()
            cam.configure(cam.create_video_configuration(main={"size": self.size, "format": "RGB888"}))
            cam.start()
        except Exception as exc:  # picamera2 raises bare RuntimeErrors and libcamera errors
            raise SourceError(f"camera {self.camera}: cannot start the Pi camera ({exc})") from exc
        self._cam = cam

    def read(self) -> Picture | None:
        if self._cam is None:
            raise SourceError(f"camera {self.camera}: not open")
        try:
            frame = self._cam.capture_array()  # type: ignore[attr-defined]
        except Exception as exc:
            raise SourceError(f"camera {self.camera}: capture failed ({exc})") from exc
        # picamera2's "RGB888" is BGR in memory order.
        return RawPicture(np.ascontiguousarray(frame[:, :, 2::-1]))

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()  # type: ignore[attr-defined]
                self._cam.close()  # type: ignore[attr-defined]
            finally:
                self._cam = None


def is_camera_url(url: str) -> bool:
    """A live camera (it has a resolution to set), as opposed to a recording: a video file or a folder."""
    return url == "picamera2" or url.isdigit() or "://" in url


def recording_problem(url: str) -> str | None:
    """Why a recording source cannot be read now (a missing file or folder), or None."""
    if is_camera_url(url) or Path(url).exists():
        return None
    return f"{url} not found (no such video file or folder)"


def make_source(
    camera: str,
    url: str,
    *,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    stills: bool = True,
) -> FrameSource:
    """The source a config's ``url`` names: 'picamera2', a folder, or anything OpenCV opens."""
    if url == "picamera2":
        return PiCameraSource(camera, width, height)
    if Path(url).is_dir():
        return FolderSource(camera, Path(url), fps or 1.0, stills=stills)
    return OpenCVSource(camera, url, width, height)
