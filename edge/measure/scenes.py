"""Distant-face scenes: labelled portraits shrunk to a pole camera's 30-60 px and placed in large frames.

A camera on a pole sees passers-by small. To measure that case without street footage,
each labelled photo is scaled so its face is ``face_px`` wide (area interpolation, as a
sensor integrates light), a head-and-shoulders region around the face is blended into a
1920x1080 background with a soft elliptical edge (no hard rectangle for the detector to
latch onto) and the scene is saved as JPEG, like a camera's output. Backgrounds come
from face-free images, upscaled and tiled, so any face found elsewhere is a false one.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.detectors.base import Detector
from edge.measure.protocol import Sample
from edge.sources import load_image

log = logging.getLogger(__name__)

SCENE_SIZE = (1920, 1080)


@dataclass(frozen=True)
class PlacedFace:
    """Where the face landed in the scene: box ``[x, y, w, h]`` in scene pixels."""

    box: tuple[float, float, float, float]


def cover(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """``img`` scaled to cover ``w`` x ``h`` and cropped to it around its centre."""
    scale = max(w / img.shape[1], h / img.shape[0])
    big = cv2.resize(img, (max(w, round(img.shape[1] * scale)), max(h, round(img.shape[0] * scale))))
    oy, ox = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[oy : oy + h, ox : ox + w]


def write_csv(path: Path, header: list[str], rows: list[tuple[object, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def background(images: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A scene-sized background: two face-free images side by side, each scaled to cover its half."""
    width, height = size
    out = np.zeros((height, width, 3), dtype=np.uint8)
    for x0, x1 in [(0, width // 2), (width // 2, width)]:
        out[:, x0:x1] = cover(images[int(rng.integers(len(images)))], x1 - x0, height)
    return out


def place_face(
    scene: np.ndarray,
    photo: np.ndarray,
    face_box: np.ndarray,
    face_px: float,
    rng: np.random.Generator,
) -> PlacedFace:
    """Blend ``photo`` scaled so its face is ``face_px`` wide into ``scene`` at a random place (in place)."""
    scale = face_px / float(face_box[2])
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    fx, fy, fw, fh = (float(v) * scale for v in face_box)
    cx, cy = fx + fw / 2, fy + fh / 2
    # Head and shoulders: 3 face widths across, from 1.5 face heights above the centre to 2.5 below.
    x0, x1 = max(0, round(cx - 1.5 * fw)), min(small.shape[1], round(cx + 1.5 * fw))
    y0, y1 = max(0, round(cy - 1.5 * fh)), min(small.shape[0], round(cy + 2.5 * fh))
    patch = small[y0:y1, x0:x1].astype(np.float32)
    ph, pw = patch.shape[:2]
    ellipse = np.zeros((ph, pw), dtype=np.float32)
    centre = (round(cx - x0), round(cy - y0 + 0.4 * fh))
    cv2.ellipse(ellipse, centre, (max(1, round(1.35 * fw)), max(1, round(1.9 * fh))), 0, 0, 360, 1.0, -1)
    soft = max(3, int(fw * 0.25) | 1)
    mask = cv2.GaussianBlur(ellipse, (soft, soft), 0)[:, :, None]
    sh, sw = scene.shape[:2]
    margin = 8
    px = int(rng.integers(margin, max(margin + 1, sw - pw - margin)))
    py = int(rng.integers(margin, max(margin + 1, sh - ph - margin)))
    region = scene[py : py + ph, px : px + pw].astype(np.float32)
    scene[py : py + ph, px : px + pw] = np.clip(region * (1 - mask) + patch * mask, 0, 255).astype(np.uint8)
    return PlacedFace(box=(px + fx - x0, py + fy - y0, fw, fh))


def largest_face_box(detector: Detector, photo: np.ndarray) -> np.ndarray | None:
    faces = detector.detect(photo)
    return max(faces, key=lambda d: d.area).box if faces else None


def build_distant_set(
    samples: list[Sample],
    backgrounds: list[np.ndarray],
    detector: Detector,
    out_dir: Path,
    *,
    min_px: float = 30.0,
    max_px: float = 60.0,
    seed: int = 0,
    size: tuple[int, int] = SCENE_SIZE,
) -> tuple[Path, int]:
    """Write one scene per sample under ``out_dir`` plus ``faces.csv`` and ``truth.csv``; returns (manifest, skipped)."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[object, ...]] = []
    truth: list[tuple[object, ...]] = []
    skipped = 0
    for i, sample in enumerate(samples):
        photo = load_image(sample.path)
        box = largest_face_box(detector, photo)
        if box is None:
            # The source photo's own face is not found: nothing to place; the scene would be unlabelled.
            log.warning("%s: no face found in the source photo, skipped", sample.path)
            skipped += 1
            continue
        scene = background(backgrounds, size, rng)
        placed = place_face(scene, photo, box, float(rng.uniform(min_px, max_px)), rng)
        rel = Path("scenes") / sample.identity / f"{i:04d}.jpg"
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_dir / rel), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append((rel.as_posix(), sample.identity))
        bx, by, bw, bh = (round(v, 1) for v in placed.box)
        truth.append((rel.as_posix(), sample.identity, bx, by, bw, bh))
    manifest = out_dir / "faces.csv"
    write_csv(manifest, ["path", "identity"], rows)
    write_csv(out_dir / "truth.csv", ["path", "identity", "x", "y", "w", "h"], truth)
    return manifest, skipped


def build_nonface_scenes(images: list[tuple[str, np.ndarray]], out_dir: Path, size: tuple[int, int] = SCENE_SIZE) -> Path:
    """Each face-free image upscaled to cover a full scene; writes ``nonfaces.csv``."""
    (out_dir / "nonfaces").mkdir(parents=True, exist_ok=True)
    rows: list[tuple[object, ...]] = []
    for name, img in images:
        scene = cover(img, *size)
        rel = Path("nonfaces") / f"{Path(name).stem}.jpg"
        cv2.imwrite(str(out_dir / rel), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        rows.append((rel.as_posix(), "NOFACE"))
    manifest = out_dir / "nonfaces.csv"
    write_csv(manifest, ["path", "identity"], rows)
    return manifest
