"""Camera-like distant scenes: variants closer to what a pole camera records than ``scenes``' original set.

Differences from the original set (kept for comparison, ``scenes.build_distant_set``):

- the face size comes from a reference box no detector under test chose (tools/data/distant_reference.csv,
  dlib's HOG detector; a fixed share of the photo where it has none), and no source photo is skipped;
- variants: ``whole`` (the whole photo, its own surroundings included, shrunk into the scene), ``patch``
  (a head-and-shoulders cut-out, as before) and ``multi`` (2-4 people at different sizes; the labelled
  one is the largest);
- the camera: sensor noise, slight motion blur, low contrast and JPEG quality 70-95;
- cluttered backgrounds (2-3 face-free images side by side, mirrored at random) and, in half of the
  scenes, a face-like distractor (an animal's face, a mask, a drawn face) 100-400 px wide.

The face-free scenes (``nonfaces``) use the same backgrounds and the same distractors, so any face
found there is a false one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.measure.protocol import Sample
from edge.measure.scenes import SCENE_SIZE, PlacedFace, cover, place_face, write_csv
from edge.sources import load_image

log = logging.getLogger(__name__)

VARIANTS = ("whole", "patch", "multi")
FALLBACK_FACE_SHARE = 0.35  # face width as a share of the photo's shorter side where no reference box exists


@dataclass(frozen=True)
class Source:
    """A labelled photo and its reference face box ``[x, y, w, h]``."""

    sample: Sample
    box: tuple[float, float, float, float]


def reference_boxes(
    samples: list[Sample], table: Mapping[str, tuple[float, float, float, float] | None], root: Path
) -> list[Source]:
    """Each sample with its reference box (``table`` keyed by path relative to ``root``), or the fallback box."""
    out = []
    for s in samples:
        key = s.path.relative_to(root).as_posix() if s.path.is_relative_to(root) else s.path.name
        box = table.get(key)
        if box is None:
            h, w = load_image(s.path).shape[:2]
            side = FALLBACK_FACE_SHARE * min(w, h)
            box = (w / 2 - side / 2, 0.4 * h - side / 2, side, side)
        out.append(Source(s, box))
    return out


def camera(scene: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """``scene`` as a modest camera records it: contrast, blur, noise; and the JPEG quality to save it at."""
    img = scene.astype(np.float32)
    if rng.random() < 0.3:  # low contrast (haze, backlight): squeeze around the mean, lift the blacks
        k = float(rng.uniform(0.7, 0.9))
        img = (img - img.mean()) * k + img.mean() + float(rng.uniform(-5, 15))
    if rng.random() < 0.3:  # slight motion blur: a line kernel 2-3 px long in a random direction
        length = float(rng.uniform(1.0, 1.5))
        kernel = np.zeros((5, 5), np.float32)
        angle = float(rng.uniform(0, np.pi))
        dx, dy = np.cos(angle) * length, np.sin(angle) * length
        cv2.line(kernel, (round(2 - dx), round(2 - dy)), (round(2 + dx), round(2 + dy)), 1.0, 1)
        img = np.asarray(cv2.filter2D(img, -1, kernel / kernel.sum()), dtype=np.float32)
    img += rng.normal(0.0, float(rng.uniform(1.0, 4.0)), img.shape).astype(np.float32)  # sensor noise
    return np.clip(img, 0, 255).astype(np.uint8), int(rng.integers(70, 96))


def clutter(images: list[np.ndarray], size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A background of 2-3 face-free images side by side, each covering its strip, mirrored at random."""
    width, height = size
    parts = int(rng.integers(2, 4))
    cuts = np.sort(rng.uniform(0.25, 0.75, parts - 1)) * width if parts > 2 else np.array([rng.uniform(0.35, 0.65) * width])
    edges = [0, *[int(c) for c in cuts], width]
    out = np.zeros((height, width, 3), dtype=np.uint8)
    for x0, x1 in itertools.pairwise(edges):
        strip = cover(images[int(rng.integers(len(images)))], x1 - x0, height)
        out[:, x0:x1] = strip[:, ::-1] if rng.random() < 0.5 else strip
    return out


def _blend(scene: np.ndarray, patch: np.ndarray, x: int, y: int, feather: int) -> None:
    """``patch`` pasted at (x, y) with edges feathered over ``feather`` pixels (in place)."""
    ph, pw = patch.shape[:2]
    mask = np.zeros((ph, pw), np.float32)
    mask[feather : ph - feather, feather : pw - feather] = 1.0
    k = 2 * feather + 1
    soft = np.asarray(cv2.GaussianBlur(mask, (k, k), 0), dtype=np.float32)[:, :, None]
    region = scene[y : y + ph, x : x + pw].astype(np.float32)
    scene[y : y + ph, x : x + pw] = np.clip(region * (1 - soft) + patch.astype(np.float32) * soft, 0, 255).astype(np.uint8)


def place_whole(
    scene: np.ndarray, photo: np.ndarray, box: tuple[float, float, float, float], face_px: float, rng: np.random.Generator
) -> PlacedFace:
    """The whole photo, scaled so its reference face is ``face_px`` wide, pasted at a random place (in place)."""
    scale = face_px / box[2]
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sh, sw = scene.shape[:2]
    small = small[: sh - 16, : sw - 16]  # a photo taller than the scene keeps its top (the face)
    ph, pw = small.shape[:2]
    x = int(rng.integers(8, max(9, sw - pw - 8)))
    y = int(rng.integers(8, max(9, sh - ph - 8)))
    _blend(scene, small, x, y, max(1, min(ph, pw) // 40))
    return PlacedFace(box=(x + box[0] * scale, y + box[1] * scale, box[2] * scale, box[3] * scale))


def drawn_face(size: int, rng: np.random.Generator) -> np.ndarray:
    """A drawn face (poster, sticker): a face-like object that is no one's face."""
    img = np.full((size, size, 3), rng.integers(150, 256, 3), dtype=np.uint8)
    c, r = size // 2, int(size * 0.42)
    skin = tuple(int(v) for v in rng.integers(60, 240, 3))
    cv2.circle(img, (c, c), r, skin, -1)
    for ex in (c - r // 2.5, c + r // 2.5):
        cv2.circle(img, (int(ex), int(c - r * 0.25)), max(2, r // 8), (20, 20, 20), -1)
    cv2.ellipse(img, (c, int(c + r * 0.35)), (r // 2, r // 5), 0, 0, 180, (40, 20, 20), max(1, r // 15))
    cv2.line(img, (c, int(c - r * 0.1)), (c, int(c + r * 0.12)), (60, 40, 40), max(1, r // 20))
    return img


def distractor(lookalikes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A face-like object 100-400 px wide: one of ``lookalikes`` (animals, masks) or a drawn face."""
    side = int(rng.integers(100, 401))
    pick = int(rng.integers(len(lookalikes) + 1))
    if pick == len(lookalikes):
        return drawn_face(side, rng)
    img = lookalikes[pick]
    scale = side / max(img.shape[:2])
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float], margin: float) -> bool:
    return not (
        a[0] + a[2] + margin < b[0] or b[0] + b[2] + margin < a[0] or a[1] + a[3] + margin < b[1] or b[1] + b[3] + margin < a[1]
    )


def _add_distractor(
    scene: np.ndarray, lookalikes: list[np.ndarray], keep_clear: list[PlacedFace], rng: np.random.Generator
) -> None:
    obj = distractor(lookalikes, rng)
    oh, ow = obj.shape[:2]
    sh, sw = scene.shape[:2]
    for _ in range(20):  # a free spot away from the people (a face behind the object would be no face)
        x, y = int(rng.integers(0, sw - ow)), int(rng.integers(0, sh - oh))
        if not any(_overlaps((x, y, ow, oh), f.box, 3 * f.box[2]) for f in keep_clear):
            _blend(scene, obj, x, y, 2)
            return


def build_camera_set(
    sources: list[Source],
    backgrounds: list[np.ndarray],
    lookalikes: list[np.ndarray],
    out_dir: Path,
    variant: str,
    *,
    min_px: float = 30.0,
    max_px: float = 60.0,
    seed: int = 0,
    size: tuple[int, int] = SCENE_SIZE,
) -> Path:
    """One scene per source under ``out_dir``/``variant``: ``faces.csv`` (eval manifest) and ``truth.csv``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {VARIANTS}")
    rng = np.random.default_rng(seed)
    root = out_dir / variant
    rows: list[tuple[object, ...]] = []
    truth: list[tuple[object, ...]] = []
    for i, src in enumerate(sources):
        scene = clutter(backgrounds, size, rng)
        photo = load_image(src.sample.path)
        face_px = float(rng.uniform(min_px, max_px))
        placed: list[tuple[PlacedFace, str]] = []
        if variant == "multi":
            # Others first and smaller (the labelled face is the largest), then the labelled one where it fits.
            face_px = float(rng.uniform(max(min_px, 0.5 * (min_px + max_px)), max_px))
            for _ in range(int(rng.integers(1, 4))):
                other = sources[int(rng.integers(len(sources)))]
                if other.sample.identity == src.sample.identity:
                    continue
                px = float(rng.uniform(min(24.0, min_px), 0.6 * face_px))  # clearly smaller: box shapes vary by person
                placed.append((place_whole(scene, load_image(other.sample.path), other.box, px, rng), "other"))
        if variant == "patch":
            box = np.array(src.box, dtype=np.float64)
            placed.append((place_face(scene, photo, box, face_px, rng), "labelled"))
        else:
            placed.append((place_whole(scene, photo, src.box, face_px, rng), "labelled"))
        if rng.random() < 0.5:
            _add_distractor(scene, lookalikes, [p for p, _ in placed], rng)
        scene, quality = camera(scene, rng)
        rel = Path("scenes") / src.sample.identity / f"{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        rows.append((rel.as_posix(), src.sample.identity))
        for face, role in placed:
            bx, by, bw, bh = (round(v, 1) for v in face.box)
            truth.append((rel.as_posix(), src.sample.identity if role == "labelled" else "", role, bx, by, bw, bh))
    manifest = root / "faces.csv"
    write_csv(manifest, ["path", "identity"], rows)
    write_csv(root / "truth.csv", ["path", "identity", "role", "x", "y", "w", "h"], truth)
    return manifest


def build_camera_nonfaces(
    backgrounds: list[np.ndarray], lookalikes: list[np.ndarray], out_dir: Path, *, count: int = 60, seed: int = 0
) -> Path:
    """``count`` face-free camera scenes (clutter, a face-like distractor in each, the camera's degradations)."""
    rng = np.random.default_rng(seed + 1)
    folder = out_dir / "nonfaces"
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[object, ...]] = []
    for i in range(count):
        scene = clutter(backgrounds, SCENE_SIZE, rng)
        for _ in range(int(rng.integers(1, 3))):
            _add_distractor(scene, lookalikes, [], rng)
        scene, quality = camera(scene, rng)
        rel = Path("nonfaces") / f"{i:03d}.jpg"
        cv2.imwrite(str(out_dir / rel), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        rows.append((rel.as_posix(), "NOFACE"))
    manifest = out_dir / "nonfaces.csv"
    write_csv(manifest, ["path", "identity"], rows)
    return manifest
