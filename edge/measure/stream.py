"""Stream benchmarks: generated clips (``edge.measure.clips``) run by edge's pipeline and by a plain one.

A pole camera mostly sees an empty street and a few people crossing it. The plain pipeline decodes every
frame in full (in a capture thread); edge gets them as edge's MJPEG sources hand them out
(``JpegPicture``) and decodes in full only the frames a detector looks at: both pay for their own
decoding, in the CPU figures.

The plain pipeline is the reference edge is measured against, in the same run on the same frames:
BlazeFace's full-frame pass once per frame (no fine pass, no close-face retry), every gated face embedded
and matched, the same tracker and alert policy; on the busy walker clip also the plain pipeline that finds
30-60 px faces (edge's detector over the whole frame at their scale). Figures are wall time (sustained frames/s) and process
CPU time (CPU-seconds per minute of video).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.analyze import FaceAnalyser
from edge.capture import CapturedFrame
from edge.config import PipelineSettings, Settings, TrackingSettings
from edge.detectors.base import Detector
from edge.detectors.blazeface import BlazeFaceDetector
from edge.match import MatcherHolder
from edge.measure.clips import STREET_GAPS, Clip, load_people, make_clip, moving_faces_clip
from edge.pipeline import FramePipeline
from edge.runtime import load_model
from edge.sources import JpegPicture, Picture, RawPicture, decode_image
from edge.track import Decision, Observation, Tracker

log = logging.getLogger(__name__)


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
        policy = a.threshold.for_entries(matcher.entry_count)  # as edge's pipeline matches this watchlist
        obs = [
            Observation(f.detection.box, f.quality, m, policy.for_face(f.quality, m.entry_threshold if m else None),
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
