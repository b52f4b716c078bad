"""The alert policy and the outbox, rule by rule, with a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge import audit
from edge.config import TrackingSettings
from edge.match import Match
from edge.outbox import Outbox
from edge.quality import Quality
from edge.track import Observation, Tracker

Q = Quality(size_px=80, sharpness=100, yaw=0, detector_score=0.9)


def obs(x: float, i: int, entry: str | None, score: float = 0.8, thr: float = 0.6, t: float | None = None) -> Observation:
    m = Match(entry, None, score, 0.1, None) if entry else None
    return Observation(np.array([x, 100, 80, 80], float), Q, m, thr, i, i / 10 if t is None else t, 1000 + i)


def run(tracker: Tracker, frames: list[list[Observation]], camera: str = "c") -> list[str]:
    hits = []
    for f in frames:
        t = f[0].t if f else 0.0
        hits += [d.entry_id for d in tracker.update(camera, t, f) if not d.cooldown]
    return hits + [d.entry_id for d in tracker.finish() if not d.cooldown]


def test_one_lucky_frame_in_a_track_is_not_a_hit() -> None:
    frames = [[obs(100 + i, i, "A" if i == 2 else None)] for i in range(6)]
    assert run(Tracker(TrackingSettings()), frames) == []


def test_two_agreeing_frames_make_one_hit_per_track_and_entry() -> None:
    frames = [[obs(100 + 2 * i, i, "A")] for i in range(10)]
    assert run(Tracker(TrackingSettings()), frames) == ["A"]


def test_a_track_split_by_a_gap_does_not_alert_twice_within_the_cooldown() -> None:
    first = [[obs(100, i, "A")] for i in range(3)]
    later = [[obs(100, i, "A", t=5 + i / 10)] for i in range(10, 13)]
    assert run(Tracker(TrackingSettings(realert_s=60)), first + later) == ["A"]
    assert run(Tracker(TrackingSettings(realert_s=1)), first + later) == ["A", "A"]


def test_a_track_that_disagrees_with_itself_raises_nothing() -> None:
    frames = [[obs(100 + i, i, "A" if i % 2 else "B")] for i in range(6)]
    assert run(Tracker(TrackingSettings(min_frames=2)), frames) == []


def test_a_still_image_hits_only_when_the_score_clears_the_threshold_by_the_margin() -> None:
    assert run(Tracker(TrackingSettings()), [[obs(100, 0, "A", score=0.70)]]) == ["A"]
    assert run(Tracker(TrackingSettings()), [[obs(100, 0, "A", score=0.62)]]) == []


def test_photos_are_separate_sightings_decided_at_the_threshold_without_cooldown() -> None:
    tracker = Tracker(TrackingSettings(realert_s=60))
    photos = [
        [obs(100, 0, "A", score=0.62)],
        [obs(100, 1, "B")],
        [obs(100, 2, "A")],
        [obs(100, 3, None)],
        [obs(100, 4, "A", 0.5)],
    ]
    hits = [[d.entry_id for d in tracker.still("c", p)] for p in photos]
    assert hits == [["A"], ["B"], ["A"], [], []], "same place in the picture, different people: never one track"


def test_a_hit_within_the_cooldown_is_reported_as_such_not_raised() -> None:
    tracker = Tracker(TrackingSettings(realert_s=60))
    first = [[obs(100, i, "A")] for i in range(3)]
    later = [[obs(100, i, "A", t=5 + i / 10)] for i in range(10, 13)]
    decisions = [d for f in first + later for d in tracker.update("c", f[0].t, f)] + tracker.finish()
    assert [(d.entry_id, d.cooldown) for d in decisions] == [("A", False), ("A", True)]


def test_two_people_in_one_frame_are_two_tracks() -> None:
    frames = [[obs(100, i, "A"), obs(400, i, "B")] for i in range(3)]
    assert sorted(run(Tracker(TrackingSettings()), frames)) == ["A", "B"]


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "edge.db", max_rows=3, max_age_s=3600)


def test_a_message_is_stored_and_audited_once_per_event_id(outbox: Outbox) -> None:
    assert outbox.add("e1", "t", b"{}", kind="hit", audit_detail={"entry_id": "A"})
    assert not outbox.add("e1", "t", b"{}", kind="hit")
    outbox.delivered("e1")
    assert not outbox.add("e1", "t", b"{}", kind="hit"), "delivered once, never queued again"
    assert [r.detail["event_id"] for r in audit.records(outbox.conn, "hit")] == ["e1"]
    assert outbox.stats().depth == 0


def test_a_full_outbox_drops_the_oldest_and_says_so(outbox: Outbox) -> None:
    for i in range(5):
        outbox.add(f"e{i}", "t", b"{}", kind="hit")
    stats = outbox.stats()
    assert stats.depth == 3 and stats.dropped == 2
    assert [p.event_id for p in outbox.pending(10)] == ["e2", "e3", "e4"]
    assert audit.records(outbox.conn, "outbox.dropped")
    assert audit.verify_chain(outbox.conn) is None


def test_a_failed_publish_keeps_the_row(outbox: Outbox) -> None:
    outbox.add("e1", "t", b"{}", kind="hit")
    outbox.failed("e1", "Not authorized")
    assert outbox.stats().depth == 1 and outbox.stats().failed_publishes == 1
    assert [p.event_id for p in outbox.pending(10, exclude={"e1"})] == []


def test_rows_survive_reopening_the_database(tmp_path: Path) -> None:
    Outbox(tmp_path / "edge.db", max_rows=10, max_age_s=3600).add("e1", "t", b"x", kind="hit")
    again = Outbox(tmp_path / "edge.db", max_rows=10, max_age_s=3600)
    assert [p.payload for p in again.pending(10)] == [b"x"]
