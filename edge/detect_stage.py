"""The detection stage: which frames are looked at, where, and by which detector pass.

A frame's first stage (``FramePipeline`` runs it on its worker thread): the change gate, then the
cheapest pass that can find what may be new (see ``edge.pipeline`` for what runs when), alignment
and the quality gate. It knows the tracks only as ``TrackView`` snapshots the recognition stage
publishes; the detectors are used by this stage alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.analyze import AnalysedFace, FaceAnalyser
from edge.capture import CapturedFrame
from edge.config import PipelineSettings
from edge.detectors.base import Detection, Region, nms_detections
from edge.motion import Box, Change, MotionGate
from edge.regions import fine_regions, inside_share

log = logging.getLogger(__name__)

FOLLOW_WINDOW_FACES = 4.0  # a followed face's window, in face widths


@dataclass
class Detected:
    """The first stage's result for one frame: gated faces (not embedded), or None when detection was skipped."""

    item: CapturedFrame
    faces: list[AnalysedFace] | None
    error: Exception | None = None
    seq: int | None = None  # submission number (staged frames)
    gated: int = 0  # faces detected but refused by the quality gate (progress figures)


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

    def centre_at(self, t: float) -> tuple[float, float]:
        """Where the face's centre should be at ``t`` if it keeps moving as it did (for at most a second)."""
        x, y, w, h = (float(v) for v in self.box)
        if self.velocity is not None and t > self.t:
            x, y = x + float(self.velocity[0]) * min(1.0, t - self.t), y + float(self.velocity[1]) * min(1.0, t - self.t)
        return x + w / 2, y + h / 2

    def body(self, t: float, pad: int) -> Region:
        """Where this person's head and body should be at ``t``: what their motion can cover."""
        w, h = float(self.box[2]), float(self.box[3])
        cx, cy = self.centre_at(t)
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


class DetectStage:
    """The first stage of ``FramePipeline``: per camera, the gate's state and what to run on each frame."""

    def __init__(
        self,
        analyser: FaceAnalyser,
        settings: PipelineSettings,
        regions: dict[str, list[Region]],
        counts: dict[str, int],
        timer: Callable[[str, float], float],
        views_before: Callable[[int | None], dict[str, tuple[TrackView, ...]]],
    ) -> None:
        self.analyser = analyser
        self.s = settings
        self.regions = regions
        self.counts = counts  # shared with the pipeline (progress figures)
        self._ms = timer
        self._views_before = views_before
        self._cameras: dict[str, _CameraState] = {}

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
        # The tracks as the recognition stage left them two frames back (see FramePipeline._views_before).
        views = self._views_before(seq).get(item.camera, ())
        if self._idle_skip(cam, views, seq):
            self.counts["unexamined"] += 1
            return Detected(item, None)
        cam.since_look = 0
        t = time.perf_counter()
        # The gate reads a small grey copy: a JPEG frame is decoded in full below only if a detector looks at it.
        change = cam.gate.update(item.picture) if self.s.motion_gate else Change(1.0, [(0, 0, w, h)], first=True)
        cam.still = not change.moved
        t = self._ms("motion", t)
        if not change.moved and cam.since_detect < self._keyframe_every(cam, views):
            return Detected(item, None)
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
            urgent = self._urgent(cam, views, seq)
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
        else:
            # A keyframe, or only known faces moved: the full-frame pass alone. A face coming close (what the
            # close-face retry is for) is a change no known face explains: the fine path above.
            detections = self.analyser.still_detector.detect(image)
        self.counts["detected"] += 1
        t = self._ms("detect", t)
        faces = [f for f in self.analyser.prepare(image, detections) if f.passed_gate]
        self._ms("align", t)
        return Detected(item, faces)

    def _keyframe_every(self, cam: _CameraState, views: Sequence[TrackView]) -> int:
        """Frames between keyframes: ``keyframe_every``, times ``idle_look_every`` on an idle camera (no live track,
        nothing changed), whose keyframe is only a check on the gate: whoever walks in changes the scene."""
        idle = cam.still and not views
        return self.s.keyframe_every * (self.s.idle_look_every if idle else 1)

    def _idle_skip(self, cam: _CameraState, views: Sequence[TrackView], seq: int | None) -> bool:
        """Whether the change gate may leave this frame unexamined: a scene is looked at every few frames.

        Idle (the last examined frame showed no change and no track of the camera is live): every
        ``idle_look_every`` frames. Busy (live tracks): every ``busy_look_every`` frames, unless a track needs
        a look now (a hit to confirm, a crossing) or its regular follow is due. Someone walking in takes
        seconds to cross, so they are found a frame or two later; a keyframe is always examined.
        """
        if not self.s.motion_gate or cam.since_detect >= self._keyframe_every(cam, views):
            return False
        if not views:
            return cam.still and cam.since_look < self.s.idle_look_every
        # Busy: the known faces are predicted between looks; only a look they need now cannot wait.
        if cam.since_look >= self.s.busy_look_every or cam.since_detect >= self.s.track_every:
            return False
        return not self._urgent(cam, views, seq)

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

    def _urgent(self, cam: _CameraState, views: Sequence[TrackView], seq: int | None) -> list[TrackView]:
        """The faces that cannot wait for the next regular follow: a hit to confirm, a crossing to sort out."""
        return [v for v in views if v.embed_due == float("-inf") and not self._outcome_pending(cam, v, seq)]

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
            side = int(min(FOLLOW_WINDOW_FACES * max(float(v.box[2]), float(v.box[3]), 24.0), w, h))
            x, y = v.centre_at(item.t)
            x0 = int(min(max(0, round(x - side / 2)), w - side))
            y0 = int(min(max(0, round(y - side / 2)), h - side))
            offset = np.array([x0, y0], dtype=np.float32)
            window = image[y0 : y0 + side, x0 : x0 + side]
            if v.settled(item.index):
                near = self.analyser.locate_detector.detect(window)
                if near:
                    centre = np.array([x - x0, y - y0], dtype=np.float32)
                    d = min(near, key=lambda d: float(np.hypot(*(d.box[:2] + d.box[2:] / 2 - centre))))
                    found.append(d.shifted(offset))
                    located.add(id(found[-1]))
                continue
            found += [d.shifted(offset) for d in self.analyser.follow_detector.detect(window)]
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
