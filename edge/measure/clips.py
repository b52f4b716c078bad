"""Generated clips for the stream benchmarks: people walking through a street, a standing crowd, drifting faces.

The walker clip is built from labelled photos (the development set when given, else the two shipped
samples): each walker's head and shoulders cross the frame with a face 30-60 px wide (some larger), at
most five at a time, in groups with empty stretches between (``STREET_GAPS``: a street empty most of the
time; ``BUSY_GAPS``: a group every second or two). Frames are JPEG-encoded once, as an MJPEG camera or
file sends them. The watchlist holds the listed walkers among 1,000 random strangers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.match import Matcher
from edge.measure.protocol import read_manifest
from edge.measure.scenes import cover
from edge.sources import load_image

STRANGERS = 1000  # watchlist entries besides the listed walkers
_Row = tuple[str, str | None, str | None, float | None, np.ndarray]  # a watchlist row for Matcher.build


@dataclass(frozen=True)
class Person:
    identity: str
    patch: np.ndarray  # head and shoulders, RGB
    face: tuple[float, float, float, float]  # face box in the patch
    listed: bool


@dataclass(frozen=True)
class Walker:
    person: Person
    start: int  # first frame
    frames: int
    path: tuple[float, float, float, float]  # x0, y0 -> x1, y1: face centre, frame pixels
    face_px: tuple[float, float]  # face width at start and end


@dataclass
class Clip:
    jpegs: list[bytes]
    size: tuple[int, int]
    fps: float
    walkers: list[Walker]
    matcher: Matcher

    @property
    def expected(self) -> set[str]:
        return {w.person.identity for w in self.walkers if w.person.listed}

    @property
    def occupied(self) -> float:
        """The share of frames with someone in view."""
        seen = {i for w in self.walkers for i in range(w.start, min(w.start + w.frames, len(self.jpegs)))}
        return len(seen) / max(1, len(self.jpegs))


def head_and_shoulders(photo: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    x0, x1 = max(0, round(cx - 1.4 * w)), min(photo.shape[1], round(cx + 1.4 * w))
    y0, y1 = max(0, round(cy - 1.3 * h)), min(photo.shape[0], round(cy + 2.2 * h))
    return photo[y0:y1, x0:x1].copy(), (x - x0, y - y0, w, h)


def load_people(analyser: FaceAnalyser, photos: Path | None, count: int, listed: int) -> tuple[list[Person], Matcher]:
    """``count`` people (the first ``listed`` on the watchlist, enrolled from the same photo) and the watchlist."""
    from edge.measure.bench import sample_image

    images: list[tuple[str, np.ndarray]] = []
    if photos is not None and (photos / "faces.csv").is_file():
        seen: set[str] = set()
        for sample in read_manifest(photos / "faces.csv"):
            if sample.identity not in seen:
                seen.add(sample.identity)
                images.append((sample.identity, load_image(sample.path)))
    else:
        images = [("astronaut", sample_image("astronaut.png")), ("photographer", sample_image("camera.png"))]
    listed = min(listed, max(1, min(count, len(images)) // 2))  # some walkers must be strangers
    people: list[Person] = []
    enrolled: list[tuple[str, np.ndarray]] = []
    for identity, img in images:
        faces = analyser.analyse(img, largest_only=True)
        if not faces or not faces[0].passed_gate:
            continue
        patch, face = head_and_shoulders(img, faces[0].detection.box)
        shrink = min(1.0, 240.0 / face[2])  # no walker's face is larger than 240 px: resize less per frame
        if shrink < 1.0:
            patch = cv2.resize(patch, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
            face = (face[0] * shrink, face[1] * shrink, face[2] * shrink, face[3] * shrink)
        is_listed = len(enrolled) < listed
        if is_listed:
            enrolled.append((identity, faces[0].embedding))
        people.append(Person(identity, patch, face, is_listed))
        if len(people) == count:
            break
    dim = analyser.embedder.dimension
    others = np.random.default_rng(7).standard_normal((STRANGERS, dim)).astype(np.float32)  # strangers on the list
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    batches: list[list[_Row]] = [[(f"e{i}", None, None, None, others[i : i + 1]) for i in range(STRANGERS)]]
    batches.append([(ident, ident, None, None, emb[None]) for ident, emb in enrolled])
    matcher = Matcher.build(
        batches, name="bench", version=1, sha256="", dimension=dim, total_embeddings=STRANGERS + len(enrolled)
    )
    return people, matcher


def paste(frame: np.ndarray, person: Person, cx: float, cy: float, face_px: float) -> None:
    """Blend ``person`` into ``frame`` with the face centre at (cx, cy) and ``face_px`` wide (in place)."""
    fx, fy, fw, fh = person.face
    scale = face_px / fw
    patch = cv2.resize(person.patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = patch.shape[:2]
    x0, y0 = round(cx - (fx + fw / 2) * scale), round(cy - (fy + fh / 2) * scale)
    h, w = frame.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + pw), min(h, y0 + ph)
    if sx1 <= sx0 or sy1 <= sy0:
        return
    mask = np.zeros((ph, pw), np.float32)
    cv2.ellipse(mask, (pw // 2, ph // 2), (pw // 2, ph // 2), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, pw / 30))[:, :, None]
    part = (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))
    region = frame[sy0:sy1, sx0:sx1].astype(np.float32)
    m = mask[part]
    frame[sy0:sy1, sx0:sx1] = (region * (1 - m) + patch[part].astype(np.float32) * m).astype(np.uint8)


# Empty stretches between groups of walkers, as shares of the clip: a group every second or two (a busy
# clip, the tests' stress case), or a street that is empty most of the time (what a pole camera sees).
BUSY_GAPS = (0.08, 0.15)
STREET_GAPS = (0.3, 0.45)


def plan_walkers(
    people: list[Person],
    frames: int,
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    crowd: int = 0,
    gaps: tuple[float, float] = BUSY_GAPS,
) -> list[Walker]:
    """People crossing the frame in groups of 0-5 with empty stretches (``gaps``) between; or a standing ``crowd``."""
    w, h = size
    out: list[Walker] = []
    if crowd:
        cols = 5
        rows = -(-crowd // cols)
        for i in range(crowd):
            r, c = divmod(i, cols)
            cx, cy = (c + 0.5) * w / cols, (r + 0.5) * h / rows
            drift = float(rng.uniform(-40, 40))
            px = float(rng.uniform(50, 90))
            out.append(Walker(people[i % len(people)], 0, frames, (cx - drift, cy, cx + drift, cy), (px, px)))
        return out
    order = list(rng.permutation(len(people)))
    start = int(frames * 0.05)
    while order and start < frames:
        group = [people[order.pop()] for _ in range(min(len(order), int(rng.integers(1, 6))))]
        span = int(frames * rng.uniform(0.12, 0.2))
        for k, p in enumerate(group):
            # One lane each, so walkers of a group pass one another instead of hiding one another's face.
            y = float((0.2 + 0.6 * (k + rng.uniform(0.3, 0.7)) / len(group)) * h)
            # At most one near walker a group: a big head pasted over a whole lane would hide the others' faces.
            big = k == 0 and rng.random() < 0.4
            f0 = float(rng.uniform(80, 160) if big else rng.uniform(30, 45))
            f1 = f0 * float(rng.uniform(1.1, 1.4)) if big else min(60.0, f0 * float(rng.uniform(1.1, 1.4)))
            # A walker moves a fifth to a third of its face width a frame (1.4 m/s at 15 frames/s).
            travel = min(0.9 * w, float(rng.uniform(0.2, 0.33)) * (f0 + f1) / 2 * span)
            x0 = float(rng.uniform(0.05 * w, 0.95 * w - travel))
            x0, x1 = (x0, x0 + travel) if rng.integers(2) else (x0 + travel, x0)
            delay = int(rng.integers(0, max(1, span // 4)))
            if start + delay + span > frames:
                continue  # walkers cross the whole way within the clip: each one is an expected hit or stranger
            out.append(Walker(p, start + delay, span, (x0, y, x1, y + float(rng.uniform(-0.05, 0.05) * h)), (f0, f1)))
        start += span + int(frames * rng.uniform(*gaps))
    return out


def make_clip(
    analyser: FaceAnalyser,
    photos: Path | None,
    *,
    size: tuple[int, int],
    frames: int,
    fps: float = 15.0,
    crowd: int = 0,
    seed: int = 0,
    cast: tuple[list[Person], Matcher] | None = None,
    gaps: tuple[float, float] = BUSY_GAPS,
) -> Clip:
    """A clip of walkers (or a standing ``crowd``); ``cast``: people and watchlist from ``load_people`` to reuse;
    ``gaps``: the empty stretches between groups (``BUSY_GAPS``, ``STREET_GAPS``)."""
    from edge.measure.bench import sample_image

    rng = np.random.default_rng(seed)
    people, matcher = cast or load_people(analyser, photos, count=max(crowd, 10), listed=5)
    walkers = plan_walkers(people, frames, size, rng, crowd=crowd, gaps=gaps)
    street = cover(sample_image("camera.png")[300:, :], *size)
    street = cv2.cvtColor(cv2.cvtColor(street, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    noise = [rng.integers(0, 6, size=(size[1], size[0], 3), dtype=np.uint8) for _ in range(3)]  # sensor noise
    jpegs = []
    for i in range(frames):
        frame = street.copy()
        for wk in walkers:
            k = i - wk.start
            if 0 <= k < wk.frames:
                a = k / max(1, wk.frames - 1)
                x0, y0, x1, y1 = wk.path
                paste(
                    frame, wk.person, x0 + a * (x1 - x0), y0 + a * (y1 - y0), wk.face_px[0] + a * (wk.face_px[1] - wk.face_px[0])
                )
        frame = cv2.add(frame, noise[i % 3])
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        jpegs.append(jpeg.tobytes())
    return Clip(jpegs, size, fps, walkers, matcher)


def moving_faces_clip(
    width: int, height: int, faces: int, frames: int, matcher: Matcher, *, face_px: float | None = None, fps: float = 15.0
) -> Clip:
    """The bench's synthetic frame with ``faces`` faces drifting a few pixels a frame (a stream, not a still)."""
    from edge.measure.bench import synthetic_frame

    street = synthetic_frame(width, height, 0)
    still = synthetic_frame(width, height, faces, face_px=face_px)
    people = (still != street).any(axis=2)
    rng = np.random.default_rng(3)
    noise = [rng.integers(0, 6, size=still.shape, dtype=np.uint8) for _ in range(3)]
    jpegs = []
    for i in range(frames):
        # The faces sway left and right by up to 24 px over a still street: every frame they are elsewhere.
        shift = round(24 * np.sin(i / 6.0))
        frame = street.copy()
        where = np.roll(people, shift, axis=1)
        frame[where] = np.roll(still, shift, axis=1)[where]
        frame = cv2.add(frame, noise[i % 3])
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        jpegs.append(jpeg.tobytes())
    return Clip(jpegs, (width, height), fps, [], matcher)
