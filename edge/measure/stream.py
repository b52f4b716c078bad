"""Stream benchmarks: generated clips of people walking through, run by edge's pipeline and by a plain one.

A pole camera mostly sees an empty street and a few people crossing it. The clip is built
from labelled photos (the development set when given, else the two shipped samples): each
walker's head and shoulders cross the frame with a face 30-60 px wide (some larger), at most
five at a time, most frames empty. Frames are JPEG-encoded once, as an MJPEG camera or file
sends them. The plain pipeline decodes every frame in full (in a capture thread); edge gets them
as edge's MJPEG sources hand them out (``JpegPicture``) and decodes in full only the frames a
detector looks at: both pay for their own decoding, in the CPU figures.

The plain pipeline is the reference edge is measured against, in the same run on the same
frames: the detector's full-frame pass once per frame (no fine pass, no close-face retry),
every gated face embedded and matched, the same tracker and alert policy. Figures are wall
time (sustained frames/s) and process CPU time (CPU-seconds per minute of video).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.capture import CapturedFrame
from edge.config import PipelineSettings, Settings, TrackingSettings
from edge.detectors.base import Detector
from edge.detectors.blazeface import BlazeFaceDetector
from edge.match import Matcher, MatcherHolder
from edge.measure.protocol import read_manifest
from edge.measure.scenes import cover
from edge.pipeline import FramePipeline
from edge.runtime import load_model
from edge.sources import JpegPicture, Picture, RawPicture, decode_image, load_image
from edge.track import Decision, Observation, Tracker

log = logging.getLogger(__name__)

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


def frames_of(clip: Clip, out: queue.Queue[CapturedFrame | None], *, decode: bool) -> None:
    """The capture thread: each frame as an MJPEG camera or file delivers it (bounded queue, like a recording).

    ``decode``: decoded in full here, as the plain pipeline needs every frame; else handed on as JPEG,
    as edge's sources do, for the pipeline to decode only what it looks at.
    """
    w, h = clip.size
    for i, data in enumerate(clip.jpegs):
        picture: Picture = RawPicture(decode_image(data)) if decode else JpegPicture(data, w, h)
        out.put(CapturedFrame("bench", picture, i, i / clip.fps, time.time()))
    out.put(None)


class PlainPipeline:
    """The reference: full-frame pass once per frame, every gated face embedded and matched, same tracker.

    ``finding``: instead of BlazeFace's one full-frame pass, edge's own detector over the whole frame at
    the scale its smallest faces need (what a per-frame pipeline that finds 30-60 px faces must spend).
    """

    def __init__(
        self, analyser: FaceAnalyser, holder: MatcherHolder, tracking: TrackingSettings, *, finding: bool = False
    ) -> None:
        self.analyser = analyser
        self.holder = holder
        self.tracker = Tracker(tracking)
        if finding:
            self.detector: Detector = analyser.detector
        else:
            # BlazeFace full-range whatever the configured detector is (the plain pipeline), with as many
            # threads per model as edge's own interpreters get.
            model = load_model(analyser.manifest, "blazeface-full-range", kind="detector", threads=analyser.threads)
            self.detector = BlazeFaceDetector(model, close_face_retry=False, min_face_px=None)
        self.embedded = 0

    def process(self, item: CapturedFrame) -> list[Decision]:
        a = self.analyser
        faces = [f for f in a.prepare(item.image, self.detector.detect(item.image)) if f.passed_gate]
        matcher = self.holder.matcher
        if not faces or matcher is None:
            return self.tracker.update(item.camera, item.t, [])
        a.embed_faces(faces)
        self.embedded += len(faces)
        matches = matcher.search(np.stack([f.embedding for f in faces]))
        obs = [
            Observation(f.detection.box, f.quality, m, a.threshold.for_face(f.quality, m.entry_threshold if m else None),
                        item.index, item.t, item.wall)
            for f, m in zip(faces, matches, strict=True)
        ]  # fmt: skip
        return self.tracker.update(item.camera, item.t, obs)


def run_clip(clip: Clip, pipeline: FramePipeline | PlainPipeline) -> dict[str, Any]:
    """Run ``clip`` through ``pipeline`` as fast as it goes: frames/s, CPU-seconds per minute of video, hits.

    Sustained figures: the clock starts once the first frame is done (a stream's start-up, every face new
    at once, is not what it sustains).
    """
    frames: queue.Queue[CapturedFrame | None] = queue.Queue(maxsize=4)
    capture = threading.Thread(
        target=frames_of,
        args=(clip, frames),
        kwargs={"decode": isinstance(pipeline, PlainPipeline)},
        name="bench-capture",
        daemon=True,
    )
    hits: list[str] = []

    def results(wait: bool) -> None:
        if isinstance(pipeline, FramePipeline):
            for r in pipeline.drain() if wait else pipeline.finished():
                if r.error is not None:
                    raise r.error
                hits.extend(d.entry_id for d in r.decisions)

    def step(item: CapturedFrame) -> None:
        if isinstance(pipeline, PlainPipeline):
            hits.extend(d.entry_id for d in pipeline.process(item))
        else:
            pipeline.submit(item)
            results(wait=False)

    capture.start()
    first = frames.get()
    assert first is not None
    step(first)
    results(wait=True)
    cpu0, t0 = time.process_time(), time.perf_counter()
    while (item := frames.get()) is not None:
        step(item)
    results(wait=True)
    hits.extend(d.entry_id for d in pipeline.tracker.finish())
    embedded = pipeline.counts["embedded"] if isinstance(pipeline, FramePipeline) else pipeline.embedded
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    capture.join()
    n = len(clip.jpegs) - 1
    minutes = n / clip.fps / 60.0
    expected = clip.expected
    return {
        "frames": n,
        "fps": round(n / wall, 1),
        "cpu_s_per_video_min": round(cpu / minutes, 1),
        "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2),
        "embedded": embedded,
        "hits_expected": len(expected),
        "hits_found": len(expected & set(hits)),
        "false_hits": sorted(set(hits) - expected),
    }


def warm_up(
    analyser: FaceAnalyser, clip: Clip, settings: PipelineSettings, tracking: TrackingSettings, holder: MatcherHolder
) -> None:
    """Build the interpreters a running device built long ago, so the rows measure what a stream sustains.

    A detector builds one interpreter per input size, once per process: the whole frame's fine pass, a
    fine-pass window, a followed (or located) face's window (square, whatever the face's size: one input
    size), the still detector's full-frame pass.
    """
    warm = FramePipeline(analyser, Tracker(tracking), holder, settings.model_copy(update={"stage_threads": False}))
    warm.process(CapturedFrame("warm-up", JpegPicture(clip.jpegs[0], *clip.size), 0, 0.0, 0.0))
    image = decode_image(clip.jpegs[0])
    side = min(settings.fine_window_px, *image.shape[:2])
    analyser.detector.detect(image, [(0, 0, side, side)])
    analyser.follow_detector.detect(image[:side, :side])
    analyser.locate_detector.detect(image[:side, :side])
    analyser.still_detector.detect(image)
    # A few frames through the threaded pipeline as measured: first imports, stage threads, the matcher's
    # first search (a first run after an install once cost a 20-frame row 0.8 s).
    short = Clip(clip.jpegs[:6], clip.size, clip.fps, [], clip.matcher)
    threaded = FramePipeline(analyser, Tracker(tracking), holder, settings)
    try:
        run_clip(short, threaded)
    finally:
        threaded.stop()
    run_clip(short, PlainPipeline(analyser, holder, tracking))


def compare(
    analyser: FaceAnalyser,
    clip: Clip,
    settings: PipelineSettings,
    tracking: TrackingSettings,
    *,
    finding: bool = False,
) -> dict[str, Any]:
    """edge's pipeline and the plain one on the same clip, in the same run: both rows and their ratios.

    ``finding``: also the plain pipeline run with edge's detector at the scale the clip's smallest faces
    need (``PlainPipeline(finding=True)``), and the ratios against it.
    """
    holder = MatcherHolder(clip.matcher)
    warm_up(analyser, clip, settings, tracking, holder)
    edge_pipe = FramePipeline(analyser, Tracker(tracking), holder, settings)
    try:
        edge_row = run_clip(clip, edge_pipe)
        edge_row["detected_frames"] = edge_pipe.counts["detected"]
        edge_row["fine_frames"] = edge_pipe.counts["fine"]
        edge_row["followed_frames"] = edge_pipe.counts["followed"]
        edge_row["unexamined_frames"] = edge_pipe.counts["unexamined"]
    finally:
        edge_pipe.stop()
    plain = run_clip(clip, PlainPipeline(analyser, holder, tracking))
    row = {
        "edge": edge_row,
        "reference": plain,
        "speed_ratio": round(edge_row["fps"] / max(plain["fps"], 1e-9), 2),
        "cpu_ratio": round(edge_row["cpu_s"] / max(plain["cpu_s"], 1e-9), 2),
    }
    if finding:
        # Its own warm-up: the detector's whole-frame input size is built once per process.
        short = Clip(clip.jpegs[:6], clip.size, clip.fps, [], clip.matcher)
        run_clip(short, PlainPipeline(analyser, holder, tracking, finding=True))
        full = run_clip(clip, PlainPipeline(analyser, holder, tracking, finding=True))
        row["reference_finding"] = full
        row["speed_ratio_finding"] = round(edge_row["fps"] / max(full["fps"], 1e-9), 2)
        row["cpu_ratio_finding"] = round(edge_row["cpu_s"] / max(full["cpu_s"], 1e-9), 2)
    return row


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


def stream_bench(analyser: FaceAnalyser, *, quick: bool, settings: Settings, photos: Path | None) -> dict[str, Any]:
    """``edge bench``'s end-to-end rows: ``fps`` (design.md keys), the ``reference`` rows and the ``streams``."""
    from edge.measure.bench import DISTANT_FACE_PX, FACE_COUNTS, RESOLUTIONS, synthetic_matcher

    matcher = synthetic_matcher(1000, analyser.embedder.dimension)
    fps: dict[str, dict[str, float]] = {}
    reference: dict[str, dict[str, float]] = {}
    ratio: dict[str, dict[str, float]] = {}
    for label, (w, h) in RESOLUTIONS.items():
        fps[label], reference[label], ratio[label] = {}, {}, {}
        for n in FACE_COUNTS:
            face_px = DISTANT_FACE_PX.get(label)
            clip = moving_faces_clip(w, h, n, frames=40 if quick else 150, matcher=matcher, face_px=face_px)
            row = compare(analyser, clip, settings.pipeline, settings.tracking)
            fps[label][f"faces_{n}"] = row["edge"]["fps"]
            reference[label][f"faces_{n}"] = row["reference"]["fps"]
            ratio[label][f"faces_{n}"] = row["speed_ratio"]
    streams = {}
    cast = load_people(analyser, photos, count=20, listed=5)
    walkers = (cast[0][:10], cast[1])
    # The stream: people walking through a street that is empty most of the time.
    street = make_clip(analyser, photos, size=(1920, 1080), frames=300 if quick else 900, cast=walkers, gaps=STREET_GAPS)
    streams["walkers_1920x1080"] = compare(analyser, street, settings.pipeline, settings.tracking)
    streams["walkers_1920x1080"]["occupied"] = round(street.occupied, 2)
    del street
    # The same walkers a group every second or two (someone in view most of the time), with the plain
    # pipeline that can find their faces (too slow to run on the long clip).
    busy = make_clip(analyser, photos, size=(1920, 1080), frames=120 if quick else 300, cast=walkers)
    streams["walkers_busy_1920x1080"] = compare(analyser, busy, settings.pipeline, settings.tracking, finding=True)
    streams["walkers_busy_1920x1080"]["occupied"] = round(busy.occupied, 2)
    del busy
    crowd = make_clip(analyser, photos, size=(1920, 1080), frames=75 if quick else 300, crowd=20, cast=cast)
    streams["crowd20_1920x1080"] = compare(analyser, crowd, settings.pipeline, settings.tracking)
    return {
        "fps": fps,
        "reference": {
            "what": "the plain pipeline on the same frames in the same run: the detector's full-frame pass once per "
            "frame, every face embedded and matched, no fine pass",
            "fps": reference,
            "speed_ratio": ratio,
        },
        "streams": streams,
        "pipeline": settings.pipeline.model_dump(mode="json"),
        "threads_per_model": settings.recognition.model_threads(),
    }
