"""Capture threads: one per source, feeding the pipeline without ever blocking a live camera.

A live source keeps only the newest few frames (the oldest are dropped and counted) so
latency and memory stay bounded when frames arrive faster than they are processed; a
recording waits for the pipeline instead, so every frame is processed and a replay gives
the same result. A source that fails is reopened with doubling back-off while the daemon
keeps serving the others, and its state is reported in the status.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.config import SourceSettings
from edge.errors import FrameError, ImageDecodeError
from edge.sources import FrameSource, Picture, SourceError, check_picture, make_source

log = logging.getLogger(__name__)


@dataclass
class CapturedFrame:
    camera: str
    picture: Picture  # decoded (only) as far as a stage asks: see edge.sources.JpegPicture
    index: int
    t: float  # media time for recordings, monotonic time for live sources
    wall: float
    still: bool = False  # a photo of its own (folder source), not a frame of a scene

    @property
    def image(self) -> np.ndarray:
        """The frame's RGB pixels (decoded on first use)."""
        return self.picture.rgb()

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), known without decoding."""
        return self.picture.width, self.picture.height


class SourceRunner:
    def __init__(self, settings: SourceSettings, queue_frames: int, wake: threading.Condition) -> None:
        self.settings = settings
        self.camera = settings.camera
        self.source: FrameSource = make_source(
            settings.camera,
            settings.url,
            width=settings.width,
            height=settings.height,
            fps=settings.fps_cap,
            stills=settings.stills,
        )
        self.live = self.source.live
        self.frames: deque[CapturedFrame] = deque()
        self.limit = queue_frames
        self.wake = wake
        self.state = "starting"
        self.captured = 0
        self.dropped = 0
        self.bad_frames = 0
        self.last_bad_frame: str | None = None
        self._bad_lock = threading.Lock()
        self.reopens = 0
        self.last_error: str | None = None
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.camera}", daemon=True)

    def fingerprint(self) -> str:
        """Identifies a recording (path and size), so events found in it get the same ids when it is replayed."""
        p = Path(self.settings.url)
        stat = p.stat() if p.exists() else None
        basis = f"{p.resolve()}:{stat.st_size if stat else 0}"
        return hashlib.sha256(basis.encode()).hexdigest()[:16]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.wake:
            self.wake.notify_all()
        self._thread.join(timeout=5)

    def _put(self, item: CapturedFrame) -> None:
        with self.wake:
            if self.live:
                if len(self.frames) >= self.limit:
                    self.frames.popleft()
                    self.dropped += 1
            else:
                while len(self.frames) >= self.limit and not self._stop.is_set():
                    self.wake.wait(timeout=0.5)
            self.frames.append(item)
            self.wake.notify_all()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.source.open()
            except SourceError as exc:
                self._failed(str(exc), backoff)
                backoff = min(backoff * 2, self.settings.reopen_max_backoff_s)
                continue
            self.state = "running"
            self.last_error = None
            backoff = 1.0
            try:
                finished = self._read_all()
            except SourceError as exc:
                self.source.close()
                self._failed(str(exc), backoff)
                backoff = min(backoff * 2, self.settings.reopen_max_backoff_s)
                continue
            self.source.close()
            if finished:
                self.state = "ended"
                self.ended.set()
                with self.wake:
                    self.wake.notify_all()
                return

    def _failed(self, message: str, backoff: float) -> None:
        self.state = "reopening"
        self.last_error = message
        self.reopens += 1
        log.warning("%s; reopening in %.0fs", message, backoff)
        self._stop.wait(backoff)

    def _read_all(self) -> bool:
        """Read until the source ends (True) or the daemon stops (False); SourceError on failure."""
        index = -1
        fps = self.source.media_fps or 25.0
        min_gap = 1.0 / self.settings.fps_cap if self.settings.fps_cap else 0.0
        last_t = -1e9
        while not self._stop.is_set():
            try:
                picture = self.source.read()
            except ImageDecodeError as exc:  # one unreadable file of a folder: count it, keep the timeline, go on
                index += 1
                self.bad_frame(index, exc)
                continue
            if picture is None:
                return True
            index += 1
            now = time.monotonic()
            t = index / fps if not self.live else now
            if t - last_t < min_gap - 1e-9:
                if self.live:
                    self._stop.wait(max(0.0, min_gap - (t - last_t)))
                continue
            try:
                picture = check_picture(picture)
            except FrameError as exc:
                self.bad_frame(index, exc)
                continue
            last_t = t
            self.captured += 1
            self._put(CapturedFrame(self.camera, picture, index, t, time.time(), self.source.stills))
        return False

    def bad_frame(self, index: int, exc: Exception) -> None:
        """Count frame ``index`` as unusable (this thread, or the pipeline for a JPEG frame that fails to decode)."""
        with self._bad_lock:
            self.bad_frames += 1
            self.last_bad_frame = str(exc)
        if self.bad_frames <= 3 or self.bad_frames % 100 == 0:  # a broken camera must not flood the log
            log.warning("camera %s: bad frame %d skipped (%s); %d so far", self.camera, index, exc, self.bad_frames)

    def status(self) -> dict[str, object]:
        return {
            "camera": self.camera,
            "state": self.state,
            "frames": self.captured,
            "dropped": self.dropped,
            "bad_frames": self.bad_frames,
            "last_bad_frame": self.last_bad_frame,
            "reopens": self.reopens,
            "error": self.last_error,
        }
