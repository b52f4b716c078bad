"""What ``edge run`` tells the person watching it: progress on recordings, each hit, a summary.

On a terminal a recording shows a progress bar (frames, frames/s, faces, tracks, hits); under
systemd or in a pipe the same figures come as a plain log line every ``interval_s``. Each hit
is one log line (or one JSON line on stdout with ``--json``), and the run ends with a
summary. Nothing here sees a face's crop or embedding: only counts and the hit's payload.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from edge.sources import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def recording_length(url: str) -> int | None:
    """Frames in a recording (images of a folder, frames of a video file); None when unknown."""
    path = Path(url)
    if path.is_dir():
        return sum(1 for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return n if n > 0 else None


def hit_line(payload: dict[str, Any]) -> str:
    """One readable line for a hit payload."""
    label = f" ({payload['label']})" if payload.get("label") else ""
    return (
        f"HIT {payload['last_seen']} camera {payload['camera']} entry {payload['entry_id']}{label} "
        f"score {payload['score']:.3f} (threshold {payload['threshold']:.3f}, {payload['frames_matched']} frames), "
        f"event {payload['event_id']}"
    )


@dataclass
class _Counts:
    frames: int = 0
    faces: int = 0
    gated: int = 0
    hits: int = 0
    first: float | None = None
    last: float | None = None

    def fps(self) -> float:
        if self.first is None or self.last is None or self.last <= self.first:
            return 0.0
        return (self.frames - 1) / (self.last - self.first)


class Progress:
    def __init__(
        self,
        runners: Sequence[Any],
        *,
        json_hits: bool = False,
        interactive: bool | None = None,
        interval_s: float = 10.0,
    ) -> None:
        self.runners = list(runners)
        self.totals = {r.camera: recording_length(r.settings.url) for r in self.runners if not r.live}
        self.counts: dict[str, _Counts] = {r.camera: _Counts() for r in self.runners}
        self.tracks: Counter[str] = Counter()
        self.cooldowns = 0
        self.json_hits = json_hits
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._next_line = self.started
        self._reported: dict[str, int] = {}
        self._ended: set[str] = set()
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    # --- events from the daemon ---

    def start(self) -> None:
        if not (self.interactive and self.totals):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[figures]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
            # JSON hit lines piped to a file must reach the file, not the bar's terminal.
            redirect_stdout=sys.stdout.isatty(),
        )
        # Log lines go above the bar: the log's handlers on stderr write to rich's redirected stderr while it runs.
        handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr]
        self._bar.start()
        self._streams = [(h, h.setStream(sys.stderr)) for h in handlers]
        for camera, total in self.totals.items():
            self._tasks[camera] = self._bar.add_task(camera, total=total, figures="")

    def frame(self, camera: str, *, faces: int, gated: int, tracks: int) -> None:
        c = self.counts.setdefault(camera, _Counts())
        now = time.monotonic()
        c.frames += 1
        c.faces += faces
        c.gated += gated
        c.first = c.first if c.first is not None else now
        c.last = now
        self.tracks[camera] = tracks
        if self._bar is not None and camera in self._tasks:
            self._bar.update(self._tasks[camera], completed=c.frames, figures=self._figures(camera))

    def hit(self, payload: dict[str, Any]) -> None:
        self.counts.setdefault(payload["camera"], _Counts()).hits += 1
        log.info("%s", hit_line(payload))
        if self.json_hits:
            try:
                sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:  # `edge run --json | head`: the reader left; the hits still go to the outbox
                self.json_hits = False
                log.warning("stdout closed: no more JSON hit lines (hits are still stored and delivered)")

    def cooldown(self, track_id: str, entry_id: str, realert_s: float) -> None:
        self.cooldowns += 1
        log.info("track %s: hit on %s within the %.0fs cooldown; not raised again", track_id, entry_id, realert_s)

    def tick(self) -> None:
        """Called from the daemon's loop: a plain progress line now and then, and a line when a recording ends."""
        for r in self.runners:
            if not r.live and r.camera not in self._ended and r.ended.is_set() and not r.frames:
                self._ended.add(r.camera)
                if self._bar is None:
                    log.info("camera %s: recording ended after %d frames", r.camera, self.counts[r.camera].frames)
        now = time.monotonic()
        if self._bar is not None or now < self._next_line:
            return
        for camera in self.totals:
            frames = self.counts[camera].frames
            if frames > self._reported.get(camera, 0):  # the first frame, then every interval_s while it moves
                self._reported[camera] = frames
                self._next_line = now + self.interval_s
                log.info("progress: camera %s %s", camera, self._figures(camera, with_total=True))

    def close(self, *, outbox_depth: int) -> None:
        """Stop the bar and log the run's summary."""
        if self._bar is not None:
            self._bar.stop()
            for h, stream in self._streams:
                h.setStream(stream)
            self._bar = None
        elapsed = time.monotonic() - self.started
        for camera, c in self.counts.items():
            log.info(
                "summary: camera %s: %d frames in %.0fs (%.1f frames/s), %d faces (%d failed the quality gate), "
                "%d tracks, %d hits",
                camera, c.frames, elapsed, c.fps(), c.faces, c.gated, self.tracks[camera], c.hits,
            )  # fmt: skip
        waiting = f"{outbox_depth} messages wait in the outbox" if outbox_depth else "nothing waits in the outbox"
        log.info("summary: %d hits, %d more within the cooldown; %s", sum(c.hits for c in self.counts.values()),
                 self.cooldowns, waiting)  # fmt: skip

    def _figures(self, camera: str, *, with_total: bool = False) -> str:
        c = self.counts[camera]
        total = self.totals.get(camera)
        done = f"{c.frames}/{total} frames, " if with_total and total else (f"{c.frames} frames, " if with_total else "")
        return f"{done}{c.fps():.1f} frames/s, {c.faces} faces, {self.tracks[camera]} tracks, {c.hits} hits"
