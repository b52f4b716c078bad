"""Tracking and the alert policy: faces linked across frames, one identity decision per track.

A face in one frame is an observation; observations that overlap from frame to frame form
a track. A track raises a hit for a watchlist entry only when several of its frames agree on
that entry above the threshold (not one lucky frame), at most once per (track, entry), and
not again for the same (camera, entry) within the cooldown, so a split or re-entered track
does not alert twice. A track seen in a single frame only may hit when its score clears the
threshold by a margin. Photos (a folder source) are not frames of one scene: each face of a
photo is its own track, decided at its threshold as ``edge eval`` does, and a photo is a
sighting of its own, so the cooldown does not apply. Nothing about faces that matched no one
is kept beyond the box needed to follow them; the debug log says why each track did not hit
(scores and reasons, never an entry, crop or vector).

Embedding is the costly step, so the tracker also says which faces need one (``wants_embedding``):
a new track's first face, a clearly better face than the best embedded so far, every frame while
a hit awaits confirmation, and every ``embed_every`` frames while the track is undecided. A track
that raised its hit, or whose ``no_match_after`` embedded faces matched no one, is decided and
not embedded again (unless a clearly better face of a no-match track shows up).
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.config import TrackingSettings
from edge.match import Match
from edge.quality import Quality

log = logging.getLogger(__name__)


@dataclass
class Observation:
    """One gated face in one frame, with its best watchlist match (if any) and the threshold it faces."""

    box: np.ndarray  # x, y, w, h in frame pixels
    quality: Quality
    match: Match | None
    threshold: float
    frame_index: int
    t: float  # source time (media time for recordings, monotonic for live cameras)
    wall: float  # wall-clock seconds
    crop: np.ndarray | None = None  # aligned face, kept only while it is the best hit frame of a track
    embedded: bool = True  # False: the tracker did not ask for this face's embedding (match is None)
    whole: bool = True  # False: the face touches the frame's edge (partly outside)

    @property
    def is_hit(self) -> bool:
        return self.match is not None and self.match.score >= self.threshold


@dataclass
class Track:
    track_id: str
    camera: str
    first: Observation
    last: Observation
    frames: int = 1
    votes: dict[str, list[Observation]] = field(default_factory=dict)
    alerted: set[str] = field(default_factory=set)
    best_miss: tuple[float, float] | None = None  # (score, threshold) of the best frame below its threshold
    alive_t: float = float("-inf")  # last static frame on which the track was kept without detection
    embedded: int = 0  # faces of this track embedded and matched
    misses: int = 0  # of those, faces that matched no entry
    best_embedded: Quality | None = None
    last_embedded_frame: int = -(10**9)
    crossed: bool = False  # another face overlapped this one since its last embedding: links may have swapped

    velocity: np.ndarray | None = None  # box corner motion, frame pixels per second

    def add(self, obs: Observation) -> None:
        dt = obs.t - self.last.t
        if dt > 0:
            v = (obs.box[:2] - self.last.box[:2]) / dt
            self.velocity = v if self.velocity is None else 0.5 * (self.velocity + v)
        self.last = obs
        self.frames += 1
        self._vote(obs)

    def predicted(self, t: float) -> np.ndarray:
        """Where the face should be at ``t`` if it keeps moving as it did (walkers move their own width in a few frames)."""
        if self.velocity is None or t <= self.last.t:
            return self.last.box
        box = self.last.box.astype(np.float64).copy()
        box[:2] += self.velocity * min(t - self.last.t, 1.0)
        return box

    @property
    def seen_t(self) -> float:
        return max(self.last.t, self.alive_t)

    def _vote(self, obs: Observation) -> None:
        if obs.embedded:
            self.crossed = False
            self.embedded += 1
            self.last_embedded_frame = obs.frame_index
            # A face cut by the frame's edge proves nothing: it neither sets the bar nor counts as a miss.
            if obs.whole and (self.best_embedded is None or obs.quality.size_px > self.best_embedded.size_px):
                self.best_embedded = obs.quality
            if not obs.is_hit and obs.whole:
                self.misses += 1
        if not obs.is_hit or obs.match is None:
            obs.crop = None  # nothing of a face that matched no one is kept
            if obs.match is not None and (self.best_miss is None or obs.match.score > self.best_miss[0]):
                self.best_miss = (obs.match.score, obs.threshold)
            return
        votes = self.votes.setdefault(obs.match.entry_id, [])
        if votes:
            # Keep only the best frame's crop per entry (for an optional thumbnail).
            best = max(votes, key=_score)
            if _score(obs) > _score(best):
                best.crop = None
            else:
                obs.crop = None
        votes.append(obs)


@dataclass(frozen=True)
class Decision:
    """A track's hit on one entry: the frames that agreed, and the best of them."""

    track: Track
    entry_id: str
    best: Observation
    frames_matched: int
    cooldown: bool = False  # decided, but within the (camera, entry) cooldown: reported, not raised


def _score(o: Observation) -> float:
    return o.match.score if o.match is not None else -1.0


MAX_REACH_WIDTHS = 2.0  # the furthest (face widths) a face continues a track it does not overlap
# ... and only a track seen this recently (two regular follows at 15 frames/s): someone appearing where a
# person was seen longer ago is a new face, not the same one after a missed detection.
MAX_REACH_GAP_S = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def clearly_better(q: Quality, best: Quality, ratio: float) -> bool:
    """Whether face ``q`` is worth another embedding after ``best``: much wider, or as wide and more frontal or sharper."""
    if q.size_px >= best.size_px * ratio:
        return True
    if q.size_px < best.size_px:
        return False
    return (abs(best.yaw) >= 10.0 and abs(q.yaw) <= abs(best.yaw) / 2) or q.sharpness >= 2 * best.sharpness


class Tracker:
    def __init__(self, settings: TrackingSettings) -> None:
        self.s = settings
        self.tracks: dict[str, list[Track]] = {}
        self._last_alert: dict[tuple[str, str], float] = {}
        self._ids = itertools.count(1)
        self.started: Counter[str] = Counter()  # tracks begun per camera (for progress figures)
        self._detected_t: dict[str, float] = {}  # per camera: time of the last frame faces were detected on

    def active(self, camera: str) -> list[Track]:
        return self.tracks.get(camera, [])

    def link(self, camera: str, boxes: list[np.ndarray], t: float | None = None) -> list[Track | None]:
        """The track each box continues (greedy by overlap with where the track should be at ``t``), None for a new face.

        Changes nothing.
        """
        tracks = self.tracks.get(camera, [])
        expected = [tr.last.box if t is None else tr.predicted(t) for tr in tracks]
        pairs = sorted(
            (
                (max(iou(tr.last.box, box), iou(expected[ti], box)), ti, oi)
                for ti, tr in enumerate(tracks)
                for oi, box in enumerate(boxes)
            ),
            reverse=True,
        )
        used_t: set[int] = set()
        out: list[Track | None] = [None] * len(boxes)
        for score, ti, oi in pairs:
            if score < self.s.iou_match or ti in used_t or out[oi] is not None:
                continue
            used_t.add(ti)
            out[oi] = tracks[ti]
        if t is not None and self.s.face_speed > 0:
            for ti, oi in self._reachable(tracks, expected, boxes, t, used_t, out):
                out[oi] = tracks[ti]
        return out

    def _reachable(
        self,
        tracks: list[Track],
        expected: list[np.ndarray],
        boxes: list[np.ndarray],
        t: float,
        used_t: set[int],
        out: list[Track | None],
    ) -> list[tuple[int, int]]:
        """(track, box) pairs that do not overlap but lie within each other's reach, each the other's only candidate.

        A small face moving a third of its width a frame no longer overlaps its last box two frames on (a
        frame or two without detection, or a track too new to have a speed). Ambiguous pairs stay apart:
        a new track costs an embedding, a wrong link could give one person's votes to another.
        """
        near: list[tuple[int, int]] = []
        for ti, tr in enumerate(tracks):
            if ti in used_t:
                continue
            dt = max(t - tr.last.t, 0.0)
            if dt > MAX_REACH_GAP_S:
                continue
            for oi, box in enumerate(boxes):
                if out[oi] is not None:
                    continue
                width = max(float(expected[ti][2]), float(box[2]))
                ratio = float(box[2]) / max(float(expected[ti][2]), 1e-6)
                if not 2 / 3 <= ratio <= 1.5:
                    continue
                centre = expected[ti][:2] + expected[ti][2:] / 2 - (box[:2] + box[2:] / 2)
                if float(np.hypot(*centre)) <= min(self.s.face_speed * dt, MAX_REACH_WIDTHS) * width:
                    near.append((ti, oi))
        per_track = Counter(ti for ti, _ in near)
        per_box = Counter(oi for _, oi in near)
        return [(ti, oi) for ti, oi in near if per_track[ti] == 1 and per_box[oi] == 1]

    def wants_embedding(self, track: Track | None, quality: Quality, frame_index: int, *, whole: bool = True) -> bool:
        """Whether this frame's face of ``track`` (None: a new face) needs an embedding (see the module doc).

        ``whole``: False for a face cut by the frame's edge (someone walking in): it is looked at on the
        undecided schedule but never counts towards "no match", and the first whole face is embedded.
        """
        if track is None:
            return True
        if track.crossed:
            return True  # another face came close: this may be someone else now
        if track.alerted:
            return False  # its hit is raised: nothing more to learn
        if whole and (track.best_embedded is None or clearly_better(quality, track.best_embedded, self.s.better_face)):
            return True
        if track.votes:
            return True  # a hit awaits confirmation by more frames
        since = frame_index - track.last_embedded_frame
        if track.misses >= self.s.no_match_after:
            # Decided "no match": only a rare second look (a face turning, an occluder leaving).
            return bool(self.s.no_match_recheck) and since >= self.s.no_match_recheck
        return since >= self.s.embed_every

    def embed_due(self, track: Track) -> float:
        """The frame index from which ``track`` wants its next embedding whatever its face (inf: decided)."""
        if track.crossed:
            return float("-inf")
        if track.alerted:
            return float("inf")
        if not track.votes and track.misses >= self.s.no_match_after:
            return float(track.last_embedded_frame + self.s.no_match_recheck) if self.s.no_match_recheck else float("inf")
        if track.votes:
            return float("-inf")
        return float(track.last_embedded_frame + self.s.embed_every)

    def _plainly_same(self, track: Track, box: np.ndarray, t: float) -> bool:
        """Whether ``box`` continues ``track`` beyond doubt: it overlaps the last box, or where the face was heading
        a moment ago. A link by reach (``_reachable``), or by a prediction carried over a long gap (someone
        stepping in where a person who left was heading), is not."""
        if iou(track.last.box, box) >= self.s.iou_match:
            return True
        return t - track.last.t <= MAX_REACH_GAP_S and iou(track.predicted(t), box) >= self.s.iou_match

    def _decided(self, track: Track) -> bool:
        return bool(track.alerted) or (not track.votes and track.misses >= self.s.no_match_after)

    def settled_px(self, track: Track) -> float:
        """Below this face width (frame pixels) a face of ``track`` needs no embedding on its own merits: only
        its position matters until ``embed_due`` (0: every face may matter; inf: none does).

        A decided track (hit raised, or no match) wants another embedding only for a clearly wider face;
        the other ``clearly_better`` cases (as wide but more frontal or sharper) wait for ``embed_due``.
        """
        if track.crossed:
            return 0.0
        if track.alerted:
            return float("inf")
        if track.votes:
            return 0.0
        if track.misses >= self.s.no_match_after and track.best_embedded is not None:
            return track.best_embedded.size_px * self.s.better_face
        return 0.0

    def keep_alive(self, camera: str, t: float) -> list[Decision]:
        """A frame skipped as unchanged: its tracks are still there (a still person does not vanish)."""
        decisions = self._expire(camera, t)
        detected = self._detected_t.get(camera, float("-inf"))
        for tr in self.tracks.get(camera, []):
            # Only faces seen on the last detected frame: one that had left by then must still end.
            if tr.last.t >= detected:
                tr.alive_t = t
        return decisions

    def update(
        self, camera: str, t: float, observations: list[Observation], links: list[Track | None] | None = None
    ) -> list[Decision]:
        """Link this frame's faces to tracks; return the hits decided by this frame (and by tracks that ended).

        ``links``: the result of ``link`` for these observations' boxes, when it was needed before (embedding).
        """
        decisions = self._expire(camera, t)
        self._detected_t[camera] = t
        tracks = self.tracks.setdefault(camera, [])
        if links is None:
            links = self.link(camera, [ob.box for ob in observations], t)
        live = {id(tr) for tr in tracks}
        touched: list[Track] = []
        used_o: set[int] = set()
        for oi, tr in enumerate(links):
            if tr is None or id(tr) not in live:  # a linked track that just expired starts a new one
                continue
            used_o.add(oi)
            ob = observations[oi]
            if self._decided(tr) and not self._plainly_same(tr, ob.box, t):
                # Make sure this is still the person the track was decided on.
                tr.crossed = True
            tr.add(ob)
            touched.append(tr)
        for oi, ob in enumerate(observations):
            if oi in used_o:
                continue
            tr = Track(track_id=f"{camera}-{ob.frame_index}-{next(self._ids)}", camera=camera, first=ob, last=ob)
            self.started[camera] += 1
            tr._vote(ob)
            tracks.append(tr)
            touched.append(tr)
        # Two faces that overlap may leave with each other's tracks (people passing): a decided track is then
        # looked at again, so nobody inherits a stranger's "no match" (or someone else's hit).
        for tr in touched:
            if sum(iou(tr.last.box, ob.box) > 0.0 for ob in observations) > 1:
                tr.crossed = True
        for tr in touched:
            decisions.extend(self._decide(tr, final=False))
        return decisions

    def still(self, camera: str, observations: list[Observation]) -> list[Decision]:
        """The faces of one photo: each its own track, a hit when its score reaches its threshold."""
        decisions = self.finish(camera)
        for ob in observations:
            tr = Track(track_id=f"{camera}-{ob.frame_index}-{next(self._ids)}", camera=camera, first=ob, last=ob)
            self.started[camera] += 1
            tr._vote(ob)
            for entry_id, (best,) in tr.votes.items():
                tr.alerted.add(entry_id)
                decisions.append(Decision(tr, entry_id, best, 1))
            if not tr.votes:
                log.debug("track %s (photo): no hit: %s", tr.track_id, _miss_reason(tr))
        return decisions

    def drop_votes(self, stale: Callable[[Match], bool]) -> int:
        """Forget votes a newer watchlist version no longer supports (an entry it removed); returns how many."""
        dropped = 0
        for tracks in self.tracks.values():
            for tr in tracks:
                for entry_id in list(tr.votes):
                    obs = tr.votes[entry_id]
                    kept = [o for o in obs if o.match is None or not stale(o.match)]
                    dropped += len(obs) - len(kept)
                    if kept:
                        tr.votes[entry_id] = kept
                    else:
                        del tr.votes[entry_id]
        return dropped

    def finish(self, camera: str | None = None) -> list[Decision]:
        """End every track (of one camera, or all): the end of a recording."""
        out: list[Decision] = []
        for cam in [camera] if camera is not None else list(self.tracks):
            for tr in self.tracks.pop(cam, []):
                out.extend(self._decide(tr, final=True))
        return out

    def _expire(self, camera: str, t: float) -> list[Decision]:
        out: list[Decision] = []
        keep = []
        for tr in self.tracks.get(camera, []):
            if t - tr.seen_t > self.s.max_gap_s:
                out.extend(self._decide(tr, final=True))
            else:
                keep.append(tr)
        self.tracks[camera] = keep
        return out

    def _decide(self, tr: Track, *, final: bool) -> list[Decision]:
        matched = sum(len(v) for v in tr.votes.values())
        out = []
        for entry_id, obs in tr.votes.items():
            if entry_id in tr.alerted:
                continue
            # Clearly more than twice as many frames as every other entry together: a track that
            # wavers between two people is no identification.
            agreed = len(obs) >= self.s.min_frames and len(obs) > 2 * (matched - len(obs))
            single = final and tr.frames == 1 and obs[0].match is not None
            if single:
                single = obs[0].match.score >= obs[0].threshold + self.s.single_frame_margin  # type: ignore[union-attr]
            if not (agreed or single):
                continue
            tr.alerted.add(entry_id)
            best = max(obs, key=_score)
            key = (tr.camera, entry_id)
            last = self._last_alert.get(key)
            if last is not None and best.t - last < self.s.realert_s:
                out.append(Decision(tr, entry_id, best, len(obs), cooldown=True))
                continue
            self._last_alert[key] = best.t
            out.append(Decision(tr, entry_id, best, len(obs)))
        if final and not tr.alerted:
            log.debug("track %s ended after %d frames: no hit: %s", tr.track_id, tr.frames, self._why_not(tr))
        return out

    def _why_not(self, tr: Track) -> str:
        """Why a track raised no hit, in scores and counts (no entry ids: it matched no one)."""
        if not tr.votes:
            return _miss_reason(tr)
        matched = sum(len(v) for v in tr.votes.values())
        parts = []
        for obs in tr.votes.values():
            best = max(_score(o) for o in obs)
            parts.append(
                f"an entry matched {len(obs)} of {tr.frames} frames (best score {best:.3f}, threshold {obs[0].threshold:.3f}); "
                f"a hit needs {self.s.min_frames} frames and more than twice those of other entries ({matched - len(obs)})"
                + (f", or a single frame {self.s.single_frame_margin:.2f} over the threshold" if tr.frames == 1 else "")
            )
        return "; ".join(parts)


def _miss_reason(tr: Track) -> str:
    if tr.best_miss is None:
        return "no watchlist entry to compare with"
    score, threshold = tr.best_miss
    return f"best score {score:.3f} below its threshold {threshold:.3f} in {tr.frames} frames"
