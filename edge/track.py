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

    def add(self, obs: Observation) -> None:
        self.last = obs
        self.frames += 1
        self._vote(obs)

    def _vote(self, obs: Observation) -> None:
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


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker:
    def __init__(self, settings: TrackingSettings) -> None:
        self.s = settings
        self.tracks: dict[str, list[Track]] = {}
        self._last_alert: dict[tuple[str, str], float] = {}
        self._ids = itertools.count(1)
        self.started: Counter[str] = Counter()  # tracks begun per camera (for progress figures)

    def active(self, camera: str) -> list[Track]:
        return self.tracks.get(camera, [])

    def update(self, camera: str, t: float, observations: list[Observation]) -> list[Decision]:
        """Link this frame's faces to tracks; return the hits decided by this frame (and by tracks that ended)."""
        decisions = self._expire(camera, t)
        tracks = self.tracks.setdefault(camera, [])
        pairs = sorted(
            ((iou(tr.last.box, ob.box), ti, oi) for ti, tr in enumerate(tracks) for oi, ob in enumerate(observations)),
            reverse=True,
        )
        used_t: set[int] = set()
        used_o: set[int] = set()
        touched: list[Track] = []
        for score, ti, oi in pairs:
            if score < self.s.iou_match or ti in used_t or oi in used_o:
                continue
            used_t.add(ti)
            used_o.add(oi)
            tracks[ti].add(observations[oi])
            touched.append(tracks[ti])
        for oi, ob in enumerate(observations):
            if oi in used_o:
                continue
            tr = Track(track_id=f"{camera}-{ob.frame_index}-{next(self._ids)}", camera=camera, first=ob, last=ob)
            self.started[camera] += 1
            tr._vote(ob)
            tracks.append(tr)
            touched.append(tr)
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
            if t - tr.last.t > self.s.max_gap_s:
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
