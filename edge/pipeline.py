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
from edge.detectors.base import Detection, Region, nms_detections
from edge.match import Match, Matcher, MatcherHolder
from edge.motion import Box, Change, MotionGate
from edge.regions import fine_regions, inside, inside_share
from edge.track import Decision, Observation, Tracker

log = logging.getLogger(__name__)

# Changed parts covering more than this share of the frame: one fine pass over all of it is cheaper.
FOLLOW_WINDOW_FACES = 4.0  # a followed face's window, in face widths
STAGES = ("motion", "detect", "align", "embed", "match")


@dataclass
class Detected:
    """The first stage's result for one frame: gated faces (not embedded), or None when detection was skipped."""

    item: CapturedFrame
    faces: list[AnalysedFace] | None
    error: Exception | None = None
    seq: int | None = None  # submission number (staged frames)
    gated: int = 0  # faces detected but refused by the quality gate (progress figures)


@dataclass
class FrameResult:
    item: CapturedFrame
    decisions: list[Decision] = field(default_factory=list)
    error: Exception | None = None
    faces: int = 0  # faces that passed the quality gate on this frame (0 when detection was skipped)
    gated: int = 0


@dataclass(frozen=True)
class TrackView:
    """What the detection stage may know of a track (a snapshot; the tracker belongs to the other stage)."""

    box: np.ndarray
    velocity: np.ndarray | None
    t: float
    embed_due: float  # frame index from which it wants an embedding (inf: decided)
    track_id: str = ""
    settled_px: float = 0.0  # faces narrower than this need only be located until embed_due (Tracker.settled_px)

    def region(self) -> Region:
        x, y, w, h = (round(float(v)) for v in self.box)
        return (x, y, w, h)

    def settled(self, index: int) -> bool:
        """Whether this track's face on frame ``index`` need only be located, not looked at closely."""
        return index < self.embed_due and float(self.box[2]) < self.settled_px

    def body(self, t: float, pad: int) -> Region:
        """Where this person's head and body should be at ``t``: what their motion can cover."""
        x, y, w, h = (float(v) for v in self.box)
        if self.velocity is not None and t > self.t:
            x, y = x + float(self.velocity[0]) * min(1.0, t - self.t), y + float(self.velocity[1]) * min(1.0, t - self.t)
        cx, cy = x + w / 2, y + h / 2
        return (round(cx - 3 * w - 2 * pad), round(cy - 3 * h - 2 * pad), round(6 * w + 4 * pad), round(8 * h + 4 * pad))


def unexplained(change: Change, views: Sequence[TrackView], t: float, pad: int) -> list[Box]:
    """The changes that lie nowhere a known person is expected: where a new face may be."""
    bodies = [v.body(t, pad) for v in views]
    return [b for b in change.boxes if not any(inside_share(b, body) >= 0.7 for body in bodies)]


@dataclass
class _CameraState:
    gate: MotionGate
    since_detect: int = 10**9
    since_fine: int = 10**9
    since_full: int = 10**9
    since_look: int = 10**9  # frames since the change gate last examined one
    still: bool = False  # the last examined frame showed no change
    followed: dict[str, int] = field(default_factory=dict)  # track id -> submission number it was last followed on


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
        self._cameras: dict[str, _CameraState] = {}
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
        if settings.stage_threads:
            self._worker = threading.Thread(target=self._work, name="detect", daemon=True)
            self._worker.start()

    # --- stage 1: detection ---

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

    def detect(self, item: CapturedFrame, seq: int | None = None) -> Detected:
        if item.still:
            return self._detect_still(item)
        w, h = item.size
        cam = self._cameras.get(item.camera)
        if cam is None:
            cam = self._cameras[item.camera] = _CameraState(MotionGate(self.s.motion))
        self.counts["frames"] += 1
        cam.since_detect += 1
        cam.since_fine += 1
        cam.since_full += 1
        cam.since_look += 1
        if self._idle_skip(cam, item, seq):
            self.counts["unexamined"] += 1
            return Detected(item, None)
        cam.since_look = 0
        t = time.perf_counter()
        # The gate reads a small grey copy: a JPEG frame is decoded in full below only if a detector looks at it.
        change = cam.gate.update(item.picture) if self.s.motion_gate else Change(1.0, [(0, 0, w, h)], first=True)
        cam.still = not change.moved
        t = self._ms("motion", t)
        if not change.moved and cam.since_detect < self.s.keyframe_every:
            return Detected(item, None)
        views = self._views_before(seq).get(item.camera, ())
        new = change.boxes if change.first else unexplained(change, views, item.t, self.s.motion.pad_px)
        # A fine pass a frame or two ago looked at these changes (or their predecessors) already.
        deferred = bool(new) and not change.first and cam.since_fine < self.s.new_look_every
        if deferred and cam.since_full < self.s.keyframe_every:
            new = []
            if not views:
                return Detected(item, None)
        if views and not new and cam.since_full < self.s.keyframe_every:
            if cam.since_detect >= self.s.track_every:
                cam.since_detect = 0
                return self._follow(item, views, t, cam, seq)
            # Only faces that cannot wait (a pending hit to confirm, a crossing) are followed between the regular
            # follows; the periodic looks at an undecided face wait for the next one: one decode, one pass each.
            urgent = [v for v in views if v.embed_due == float("-inf") and not self._outcome_pending(cam, v, seq)]
            if urgent:
                return self._follow(item, urgent, t, cam, seq)
            return Detected(item, None)  # only known people moved: followed again in a few frames
        cam.since_full = 0
        image = item.image
        configured = self.regions.get(item.camera, [])
        if change.first or cam.since_fine >= self.s.fine_every:
            fine: list[Region] | None = configured or None
        else:
            fine = fine_regions(new, configured, w, h, self.s.fine_window_px)
            if fine is None:
                fine = configured or None
        # The known faces' regular follow is put off only when this pass looked where every one of them is
        # (else a face outside the changed parts would go unseen while changes elsewhere keep coming).
        if fine is None or not views or (fine and all(any(inside_share(v.region(), r) >= 0.9 for r in fine) for v in views)):
            cam.since_detect = 0
        if fine is None or fine:
            cam.since_fine = 0
            self.counts["fine"] += 1
            detections = self.analyser.detector.detect(image, fine)
        elif change.moved:
            detections = self.analyser.coarse_detector.detect(image)
        else:
            # A keyframe of a still scene: a face filling the frame (what the close-face retry is for) arrives moving.
            detections = self.analyser.still_detector.detect(image)
        self.counts["detected"] += 1
        t = self._ms("detect", t)
        faces = [f for f in self.analyser.prepare(image, detections) if f.passed_gate]
        self._ms("align", t)
        return Detected(item, faces)

    def _idle_skip(self, cam: _CameraState, item: CapturedFrame, seq: int | None) -> bool:
        """Whether the change gate may leave this frame unexamined: a scene is looked at every few frames.

        Idle (the last examined frame showed no change and no track of the camera is live): every
        ``idle_look_every`` frames. Busy (live tracks): every ``busy_look_every`` frames, unless a track needs
        a look now (a hit to confirm, a crossing) or its regular follow is due. Someone walking in takes
        seconds to cross, so they are found a frame or two later; a keyframe is always examined.
        """
        if not self.s.motion_gate or cam.since_detect >= self.s.keyframe_every:
            return False
        views = self._views_before(seq).get(item.camera)
        if not views:
            return cam.still and cam.since_look < self.s.idle_look_every
        # Busy: the known faces are predicted between looks; only a look they need now cannot wait.
        if cam.since_look >= self.s.busy_look_every or cam.since_detect >= self.s.track_every:
            return False
        return not any(v.embed_due == float("-inf") and not self._outcome_pending(cam, v, seq) for v in views)

    def _detect_still(self, item: CapturedFrame) -> Detected:
        """A photo of its own (folder source): the whole detector, no gating by change or by tracks."""
        self.counts["frames"] += 1
        t = time.perf_counter()
        detections = self.analyser.detector.detect(item.image, self.regions.get(item.camera) or None)
        self.counts["detected"] += 1
        t = self._ms("detect", t)
        faces = self.analyser.prepare(item.image, detections)
        self._ms("align", t)
        for f in faces:
            if not f.passed_gate:
                log.debug("camera %s photo %d: a face failed the quality gate (%s)", item.camera, item.index,
                          "; ".join(f.gate_reasons))  # fmt: skip
        passed = [f for f in faces if f.passed_gate]
        return Detected(item, passed, gated=len(faces) - len(passed))

    @staticmethod
    def _outcome_pending(cam: _CameraState, view: TrackView, seq: int | None) -> bool:
        """Whether ``view``'s track was followed on a frame whose outcome the tracks seen here do not show yet.

        Detection plans with the tracks as they were two frames back: following a face again before the
        last follow's outcome (the confirmed hit, the crossing sorted out) is known would only repeat it.
        """
        return seq is not None and cam.followed.get(view.track_id, -(10**9)) >= seq - 1

    def _follow(
        self,
        item: CapturedFrame,
        views: Sequence[TrackView],
        t: float,
        cam: _CameraState | None = None,
        seq: int | None = None,
    ) -> Detected:
        """Known faces looked for only where they should be: one detector pass per face, no full-frame pass.

        Each window is four face widths wide, so the face is ~48 px of the detector's 192 px input:
        the size the detector's own refinement re-measures small faces at (keypoints good enough to embed).
        A face whose track is settled (decided, and this face no wider than the one it was decided on) is
        only located: one pass, no second look or confirmation, the detection nearest where it should be;
        such faces are never embedded.
        """
        image = item.image
        h, w = image.shape[:2]
        found: list[Detection] = []
        located: set[int] = set()
        for v in views:
            bx, by, bw, bh = (float(x) for x in v.box)
            side = int(min(FOLLOW_WINDOW_FACES * max(bw, bh, 24.0), w, h))
            x, y = bx + bw / 2, by + bh / 2
            if v.velocity is not None and item.t > v.t:
                x, y = x + float(v.velocity[0]) * min(1.0, item.t - v.t), y + float(v.velocity[1]) * min(1.0, item.t - v.t)
            x0 = int(min(max(0, round(x - side / 2)), w - side))
            y0 = int(min(max(0, round(y - side / 2)), h - side))
            offset = np.array([x0, y0], dtype=np.float32)
            window = image[y0 : y0 + side, x0 : x0 + side]
            if v.settled(item.index):
                near = self.analyser.locate_detector.detect(window)
                if near:
                    centre = np.array([x - x0, y - y0], dtype=np.float32)
                    d = min(near, key=lambda d: float(np.hypot(*(d.box[:2] + d.box[2:] / 2 - centre))))
                    box = d.box.copy()
                    box[:2] += offset
                    found.append(Detection(box=box, keypoints=d.keypoints + offset, score=d.score))
                    located.add(id(found[-1]))
                continue
            for d in self.analyser.follow_detector.detect(window):
                box = d.box.copy()
                box[:2] += offset
                found.append(Detection(box=box, keypoints=d.keypoints + offset, score=d.score))
        self.counts["followed"] += 1
        if cam is not None and seq is not None:
            live = {v.track_id for v in views}
            cam.followed = {k: n for k, n in cam.followed.items() if n >= seq - 1 and k not in live}
            cam.followed.update((k, seq) for k in live)
        t = self._ms("detect", t)
        faces = [f for f in self.analyser.prepare(image, nms_detections(found, 0.3)) if f.passed_gate]
        for f in faces:
            f.located = id(f.detection) in located
        self._ms("align", t)
        return Detected(item, faces)

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
            thr = self.analyser.threshold.for_face(f.quality, m.entry_threshold if m else None)
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
