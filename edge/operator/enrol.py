"""Enrolment: photos of watchlist entries → embeddings, through the device's own pipeline.

Each photo must show one face clearly (it passes the same quality gate as on the device,
and any second face must be much smaller, so a bystander is never enrolled by mistake).
Every photo that is not used is listed with the reason. With ``recognition.enrol_views`` (on by
default) each accepted face is also embedded as a distant camera would see it (``edge.distant_views``),
so an entry holds several embeddings and scores the max over them.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.analyze import FaceAnalyser
from edge.distant_views import DistantViews, calibration_mismatch, view_embeddings
from edge.errors import EdgeError, ImageDecodeError
from edge.sources import IMAGE_SUFFIXES, load_image
from edge.untrusted import read_csv
from edge.watchlist.chunks import ENTRY_ID_RE, Entry

log = logging.getLogger(__name__)

# A second face at least this share of the main face's area makes the photo ambiguous.
AMBIGUOUS_AREA_SHARE = 0.25


@dataclass
class EnrolRequest:
    entry_id: str
    photos: list[Path]
    label: str | None = None
    case_ref: str | None = None
    expires_at: str | None = None
    threshold: float | None = None


@dataclass
class EnrolReport:
    entries: list[Entry] = field(default_factory=list)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def requests_from_folder(folder: Path) -> list[EnrolRequest]:
    """One subfolder per entry; the folder name is the entry_id."""
    layout = f"one subfolder per entry, named by its entry_id: {folder}/case-0001/photo1.jpg, {folder}/case-0002/..."
    if not folder.is_dir():
        raise EdgeError(f"--photos {folder}: not a folder; it needs {layout}")
    loose = [p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose and not any(p.is_dir() for p in folder.iterdir()):
        raise EdgeError(f"--photos {folder} holds {len(loose)} photos directly; it needs {layout}")
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not ENTRY_ID_RE.fullmatch(sub.name):
            raise EdgeError(f"{sub}: folder name is not a valid entry_id (letters, digits, _.:@- only)")
        photos = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        out.append(EnrolRequest(sub.name, photos))
    return out


def requests_from_csv(path: Path) -> list[EnrolRequest]:
    """CSV with ``entry_id,path`` and optional ``label,case_ref,expires_at,threshold`` (paths relative to it)."""
    reader = read_csv(
        path, {"entry_id", "path"}, "columns entry_id,path (optional label,case_ref,expires_at,threshold)", EdgeError
    )
    by_id: dict[str, EnrolRequest] = {}
    for line, row in enumerate(reader, start=2):
        eid = (row.get("entry_id") or "").strip()
        if not ENTRY_ID_RE.fullmatch(eid):
            raise EdgeError(f"{path}:{line}: bad entry_id {eid!r}")
        req = by_id.setdefault(eid, EnrolRequest(eid, []))
        photo = (row.get("path") or "").strip()
        if not photo:
            raise EdgeError(f"{path}:{line}: empty path")
        req.photos.append(path.parent / photo)
        req.label = row.get("label") or req.label
        req.case_ref = row.get("case_ref") or req.case_ref
        req.expires_at = row.get("expires_at") or req.expires_at
        if row.get("threshold"):
            try:
                req.threshold = float(row["threshold"])
            except ValueError as exc:
                raise EdgeError(f"{path}:{line}: threshold {row['threshold']!r} is not a number") from exc
    return list(by_id.values())


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty() or done == total:
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} photos")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def enrol(
    analyser: FaceAnalyser, requests: list[EnrolRequest], *, progress: bool = True, views: DistantViews | None = None
) -> EnrolReport:
    """``views``: each accepted photo's face also enrolled as a distant camera sees it (``edge.distant_views``)."""
    report = EnrolReport()
    mismatch = calibration_mismatch(analyser, views)
    if mismatch:
        log.warning("%s", mismatch)
    total = sum(len(r.photos) for r in requests)
    done = 0
    for req in requests:
        embeddings = []
        for photo in req.photos:
            done += 1
            if progress:
                _progress(done, total)
            try:
                image = load_image(photo)
            except ImageDecodeError as exc:
                report.rejected.append((photo, str(exc).split(": ", 1)[-1]))
                continue
            faces = sorted(analyser.analyse(image, apply_gate=True), key=lambda f: -f.detection.area)
            if not faces:
                report.rejected.append((photo, "no face found"))
                continue
            if len(faces) > 1 and faces[1].detection.area >= AMBIGUOUS_AREA_SHARE * faces[0].detection.area:
                report.rejected.append((photo, f"{len(faces)} faces of similar size; enrolment needs one person"))
                continue
            if not faces[0].passed_gate:
                report.rejected.append((photo, "quality: " + "; ".join(faces[0].gate_reasons)))
                continue
            embeddings.append(faces[0].embedding)
            if views is not None:
                embeddings.extend(view_embeddings(analyser, image, faces[0].detection.box, views, seed=len(embeddings)))
        if not embeddings:
            report.empty.append(req.entry_id)
            continue
        report.entries.append(
            Entry(
                entry_id=req.entry_id,
                embeddings=np.stack(embeddings).astype(np.float32),
                label=req.label,
                case_ref=req.case_ref,
                expires_at=req.expires_at,
                threshold=req.threshold,
            )
        )
    return report
