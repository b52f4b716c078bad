"""The per-frame pipeline: change gate → detect → quality → (only the faces tracks need) embed → match → track.

Two stages. ``detect`` (change gating, detector, alignment and quality) and ``recognise``
(linking faces to tracks, embedding the faces the tracker asks for, matching, the alert
policy). With ``stage_threads`` the first runs on a worker thread while the caller runs the
second for the previous frame, so on a stream two cores are busy (TFLite releases the GIL
while it computes); frames stay in order. The tracker and the matcher are only ever used by
the caller's thread, the detector only by the worker.

What runs on a frame (see ``edge.motion``):
- an idle camera (no live track, no change on the last frame examined): the change gate examines only
  every ``idle_look_every`` frames; the others are not looked at (a JPEG frame is not even decoded);
  with live tracks, every ``busy_look_every`` frames unless a track needs a look now;
- nothing changed since the previous frame and no keyframe is due: no detection at all; the
  tracks seen last are kept alive;
- only known people moved: their faces are followed in small windows every ``track_every`` frames
  (a decided face is only located there: one cheap pass, no embedding);
- something changed where no known face explains it: the full-frame pass, and the fine pass for small
  faces only on the changed parts (within the camera's ``regions``), at most every ``new_look_every``
  frames; every ``fine_every`` frames, and on the first, the fine pass over the whole frame (or all
  ``regions``).
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.analyze import AnalysedFace, FaceAnalyser
from edge.capture import CapturedFrame
from edge.config import PipelineSettings
from edge.detect_stage import Detected, DetectStage, TrackView
from edge.detectors.base import Region
from edge.match import Match, Matcher, MatcherHolder
from edge.regions import inside
from edge.threshold import ThresholdPolicy
from edge.track import Decision, Observation, Tracker

log = logging.getLogger(__name__)

STAGES = ("motion", "detect", "align", "embed", "match")


@dataclass
class FrameResult:
    item: CapturedFrame
    decisions: list[Decision] = field(default_factory=list)
    error: Exception | None = None
    faces: int = 0  # faces that passed the quality gate on this frame (0 when detection was skipped)
    gated: int = 0


class FramePipeline:
    def __init__(
        self,
        analyser: FaceAnalyser,
        tracker: Tracker,
        holder: MatcherHolder,
        settings: PipelineSettings,
        *,
        regions: dict[str, list[Region]] | None = None,
        keep_crops: bool = False,
    ) -> None:
        self.analyser = analyser
        self.tracker = tracker
        self.holder = holder
        self.s = settings
        self.regions = regions or {}
        self.keep_crops = keep_crops
        self.stage_ms: dict[str, deque[float]] = {k: deque(maxlen=200) for k in STAGES}
        self._ms_lock = threading.Lock()  # both stages write timings, the status thread reads them
        self.counts = {"frames": 0, "detected": 0, "fine": 0, "followed": 0, "faces": 0, "embedded": 0, "unexamined": 0}
        self._views: dict[str, tuple[TrackView, ...]] = {}  # written by the recognition stage, read by detection
        # The detection stage of the n-th submitted frame sees the tracks as they were after frame n-2, whatever the
        # threads' timing: a recording replayed gives the same tracks, so the same event ids (no hit sent twice).
        self._seq = 0
        self._snapshots: dict[int, dict[str, tuple[TrackView, ...]]] = {}
        self._snap_cond = threading.Condition()
        self._stopping = False
        self._inbox: queue.Queue[tuple[int, CapturedFrame] | None] = queue.Queue(maxsize=1)
        self._outbox: queue.Queue[Detected] = queue.Queue()
        self._pending = 0
        self._worker: threading.Thread | None = None
        # The threshold policy for the watchlist version being served (a large list is matched stricter), with the
        # version it was worked out for; recognition thread only.
        self._policy: tuple[tuple[str, int, int], ThresholdPolicy] | None = None
        self.detection = DetectStage(analyser, settings, self.regions, self.counts, self._ms, self._views_before)
        if settings.stage_threads:
            self._worker = threading.Thread(target=self._work, name="detect", daemon=True)
            self._worker.start()

    # --- timings, and the tracks as the detection stage sees them ---

    def _ms(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        with self._ms_lock:
            self.stage_ms[stage].append((now - start) * 1000.0)
        return now

    def latency_ms(self) -> dict[str, float | None]:
        """Median milliseconds per stage over the last frames that ran it."""
        with self._ms_lock:
            return {k: round(statistics.median(v), 2) if v else None for k, v in self.stage_ms.items()}

    def _views_before(self, seq: int | None) -> dict[str, tuple[TrackView, ...]]:
        if seq is None:
            return self._views
        if seq < 2:
            return {}
        with self._snap_cond:
            while seq - 2 not in self._snapshots and not self._stopping:
                self._snap_cond.wait(timeout=1.0)
            return self._snapshots.get(seq - 2, {})

    def _publish(self, seq: int | None) -> None:
        if seq is None:
            return
        with self._snap_cond:
            self._snapshots[seq] = dict(self._views)
            for old in [k for k in self._snapshots if k < seq - 4]:
                del self._snapshots[old]
            self._snap_cond.notify_all()

    # --- stage 2: tracks, embeddings, matching ---

    def recognise(self, d: Detected) -> list[Decision]:
        decisions = self._recognise(d)
        tr = self.tracker
        self._views[d.item.camera] = tuple(
            TrackView(t.last.box, t.velocity, t.last.t, tr.embed_due(t), t.track_id, tr.settled_px(t))
            for t in tr.active(d.item.camera)
        )
        return decisions

    def _recognise(self, d: Detected) -> list[Decision]:
        item = d.item
        if d.faces is None:
            return self.tracker.keep_alive(item.camera, item.t)
        matcher = self.holder.matcher
        if matcher is None:
            return self.tracker.update(item.camera, item.t, [])
        faces = d.faces
        self.counts["faces"] += len(faces)
        if item.still:  # each face of a photo is its own track: every one is embedded and decided now
            return self.tracker.still(item.camera, self._observe(item, faces, faces, matcher))
        links = self.tracker.link(item.camera, [f.detection.box for f in faces], item.t)
        w, h = item.size
        whole = {id(f): inside(f.detection.box, w, h) for f in faces}
        wanted = [
            f
            for f, tr in zip(faces, links, strict=True)
            if not f.located and self.tracker.wants_embedding(tr, f.quality, item.index, whole=whole[id(f)])
        ]
        observations = self._observe(item, faces, wanted, matcher, whole)
        # Embeddings and crops of faces that matched no one go out of scope here.
        return self.tracker.update(item.camera, item.t, observations, links)

    def _observe(
        self,
        item: CapturedFrame,
        faces: Sequence[AnalysedFace],
        wanted: Sequence[AnalysedFace],
        matcher: Matcher,
        whole: dict[int, bool] | None = None,
    ) -> list[Observation]:
        """Embed and match the ``wanted`` faces in one batch; one observation per face."""
        matches: dict[int, Match | None] = {}
        if wanted:
            t = time.perf_counter()
            self.analyser.embed_faces(wanted)
            t = self._ms("embed", t)
            matches = dict(zip(map(id, wanted), matcher.search(np.stack([f.embedding for f in wanted])), strict=True))
            self._ms("match", t)
            self.counts["embedded"] += len(wanted)
        observations = []
        for f in faces:
            embedded = id(f) in matches
            m = matches.get(id(f))
            thr = self._policy_for(matcher).for_face(f.quality, m.entry_threshold if m else None)
            crop = f.crop if self.keep_crops and embedded else None
            observations.append(
                Observation(
                    f.detection.box,
                    f.quality,
                    m,
                    thr,
                    item.index,
                    item.t,
                    item.wall,
                    crop,
                    embedded=embedded,
                    whole=True if whole is None else whole[id(f)],
                )
            )
        return observations

    def _policy_for(self, matcher: Matcher) -> ThresholdPolicy:
        """The threshold policy for the watchlist ``matcher`` serves, worked out once per version."""
        key = (matcher.name, matcher.version, matcher.entry_count)
        if self._policy is None or self._policy[0] != key:
            policy = self.analyser.threshold.for_entries(matcher.entry_count)
            note = self.analyser.threshold.explain(matcher.entry_count)
            if note:
                level = logging.INFO if policy.holds(matcher.entry_count) else logging.WARNING
                log.log(level, "watchlist %s v%d: %s", matcher.name, matcher.version, note)
            self._policy = (key, policy)
        return self._policy[1]

    def detect(self, item: CapturedFrame, seq: int | None = None) -> Detected:
        """The first stage for one frame (``DetectStage.detect``)."""
        return self.detection.detect(item, seq)

    def process(self, item: CapturedFrame) -> list[Decision]:
        """Both stages on the calling thread."""
        return self.recognise(self.detect(item))

    # --- staging ---

    def _detect_safely(self, item: CapturedFrame, seq: int) -> Detected:
        try:
            d = self.detect(item, seq)
        except Exception as exc:  # one bad frame must not stop the device; reported with its frame
            d = Detected(item, None, error=exc)
        d.seq = seq
        return d

    def _work(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                return
            self._outbox.put(self._detect_safely(job[1], job[0]))

    def submit(self, item: CapturedFrame) -> None:
        """Hand a frame to the detection stage (waits while the stage is busy with an earlier one).

        Call ``finished`` after each ``submit``: detection of a frame waits for the tracks two frames back.
        """
        self._pending += 1
        seq, self._seq = self._seq, self._seq + 1
        if self._worker is None:
            self._outbox.put(self._detect_safely(item, seq))
        else:
            self._inbox.put((seq, item))

    def idle(self) -> bool:
        return self._pending == 0

    def finished(self, wait_s: float = 0.0) -> Iterator[FrameResult]:
        """Run the second stage for every frame whose detection is done (waiting up to ``wait_s`` for one)."""
        while self._pending:
            try:
                d = self._outbox.get(timeout=wait_s) if wait_s > 0 else self._outbox.get_nowait()
            except queue.Empty:
                return
            wait_s = 0.0
            self._pending -= 1
            if d.error is not None:
                result = FrameResult(d.item, error=d.error)
            else:
                try:
                    result = FrameResult(d.item, self.recognise(d), faces=len(d.faces or ()), gated=d.gated)
                except Exception as exc:
                    result = FrameResult(d.item, error=exc)
            self._publish(d.seq)
            yield result

    def drain(self) -> Iterator[FrameResult]:
        """Every submitted frame's result (waits for the detection stage)."""
        while self._pending:
            yield from self.finished(wait_s=1.0)

    def stop(self) -> None:
        with self._snap_cond:
            self._stopping = True
            self._snap_cond.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._inbox.put(None)
            self._worker.join(timeout=5)
