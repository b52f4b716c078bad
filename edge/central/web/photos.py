"""Enrolment photos kept centrally: the folder the watchlist build reads (one subfolder per entry_id).

Photos never go to devices; the console shows them beside a hit so a reviewer can compare, and
only to a logged-in account. Paths come from listing the folder, never from the request, so no
entry id or file name from outside can reach another file.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.sources import IMAGE_SUFFIXES
from edge.watchlist.chunks import ENTRY_ID_RE

log = logging.getLogger(__name__)
MAX_PHOTOS_SHOWN = 6


def entry_photos(photos_dir: Path | None, entry_id: str) -> list[Path]:
    """The entry's photo files, sorted (empty when the entry or the folder is unknown)."""
    if photos_dir is None or not ENTRY_ID_RE.match(entry_id) or entry_id in (".", ".."):
        return []
    folder = photos_dir / entry_id
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def photo_file(photos_dir: Path | None, entry_id: str, name: str) -> Path | None:
    for p in entry_photos(photos_dir, entry_id):
        if p.name == name:
            return p
    return None


def photo_urls(photos_dir: Path | None, entry_id: str) -> list[dict[str, str]]:
    from urllib.parse import quote

    return [
        {"url": f"/photos/{quote(entry_id, safe='')}/{quote(p.name, safe='')}", "name": p.name}
        for p in entry_photos(photos_dir, entry_id)[:MAX_PHOTOS_SHOWN]
    ]


def media_type(path: Path) -> str:
    return {".png": "image/png", ".bmp": "image/bmp", ".webp": "image/webp"}.get(path.suffix.lower(), "image/jpeg")


@dataclass(frozen=True)
class PhotoQuality:
    name: str
    usable: bool
    reasons: list[str]
    size_px: float | None = None
    sharpness: float | None = None
    yaw: float | None = None


class QualityChecker:
    """Each enrolment photo through the device's own detector and quality gate (models loaded on first use)."""

    def __init__(self) -> None:
        self._analyser: object | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, float], PhotoQuality] = {}

    def check(self, path: Path) -> PhotoQuality:
        from edge.analyze import FaceAnalyser
        from edge.config import RecognitionSettings
        from edge.errors import EdgeError
        from edge.operator.enrol import AMBIGUOUS_AREA_SHARE
        from edge.sources import load_image

        key = (str(path), path.stat().st_mtime)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if self._analyser is None:
                self._analyser = FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu"))
            analyser = self._analyser
            assert isinstance(analyser, FaceAnalyser)
            try:
                faces = sorted(analyser.analyse(load_image(path), apply_gate=True), key=lambda f: -f.detection.area)
            except EdgeError as exc:
                result = PhotoQuality(path.name, False, [str(exc).split(": ", 1)[-1]])
            else:
                if not faces:
                    result = PhotoQuality(path.name, False, ["no face found"])
                else:
                    f = faces[0]
                    reasons = list(f.gate_reasons)
                    if len(faces) > 1 and faces[1].detection.area >= AMBIGUOUS_AREA_SHARE * f.detection.area:
                        reasons.append(f"{len(faces)} faces of similar size")
                    q = f.quality
                    result = PhotoQuality(path.name, not reasons, reasons, q.size_px, q.sharpness, q.yaw)
            self._cache[key] = result
            return result
