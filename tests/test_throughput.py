"""Spending the CPU where faces are: change gating, track-level embedding, the staged pipeline — without losing a hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.capture import CapturedFrame
from edge.config import MotionSettings, PipelineSettings, TrackingSettings
from edge.match import Match, MatcherHolder
from edge.measure.bench import synthetic_frame
from edge.measure.clips import load_people, make_clip
from edge.measure.stream import compare
from edge.motion import MotionGate
from edge.pipeline import FramePipeline
from edge.quality import Quality
from edge.regions import windows
from edge.sources import JpegPicture, RawPicture
from edge.track import Observation, Tracker

Q = Quality(size_px=40, sharpness=100, yaw=0, detector_score=0.9)


def noisy(frame: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out: np.ndarray = np.clip(frame.astype(np.int16) + rng.integers(-3, 4, size=frame.shape), 0, 255).astype(np.uint8)
    return out


def as_jpeg(frame: np.ndarray) -> JpegPicture:
    import cv2

    _, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return JpegPicture(data.tobytes(), frame.shape[1], frame.shape[0])


@pytest.mark.parametrize("jpeg", [False, True], ids=["raw", "jpeg"])
def test_a_static_scene_with_sensor_noise_is_unchanged_and_a_moving_face_is_found_where_it_is(jpeg: bool) -> None:
    gate = MotionGate(MotionSettings())
    street = synthetic_frame(1280, 720, 0)
    frame = as_jpeg if jpeg else RawPicture  # a JPEG frame is compared on its scaled grey decode
    assert gate.update(frame(noisy(street, 0))).first
    for seed in range(1, 4):
        assert not gate.update(frame(noisy(street, seed))).moved
    with_face = synthetic_frame(1280, 720, 1, face_px=45)
    change = gate.update(frame(noisy(with_face, 9)))
    assert change.moved and len(change.boxes) == 1
    x, y, w, h = change.boxes[0]
    assert x <= 640 <= x + w and y <= 360 <= y + h  # the face sits in the middle of the frame
    assert w * h < 0.2 * 1280 * 720  # only around it


def test_an_idle_scene_is_looked_at_every_few_frames_and_every_frame_once_something_moves(analyser: FaceAnalyser) -> None:
    pipe = FramePipeline(
        analyser, Tracker(TrackingSettings()), MatcherHolder(), PipelineSettings(stage_threads=False, idle_look_every=3)
    )
    street = synthetic_frame(640, 480, 0)
    face = synthetic_frame(640, 480, 1, face_px=60)
    examined = []
    for i in range(24):
        frame = noisy(street if i < 12 else np.roll(face, 6 * i, axis=1), i)
        before = pipe.counts["unexamined"]
        pipe.process(CapturedFrame("c", as_jpeg(frame), i, i / 15, 0.0))
        examined.append(pipe.counts["unexamined"] == before)
    pipe.stop()
    # The empty street: the first two frames (nothing to compare the first with), then one in three (and keyframes).
    assert examined[:2] == [True, True] and sum(examined[2:12]) <= 4
    # Someone walks in: seen at the next look at the latest, then every frame is examined.
    first = examined.index(True, 12)
    assert first <= 14 and all(examined[first:])


def test_fine_pass_windows_have_one_size_and_cover_the_change() -> None:
    wins = windows((100, 200, 900, 300), 384, 1920, 1080, overlap=96)
    assert {(w, h) for _, _, w, h in wins} == {(384, 384)}
    assert min(x for x, *_ in wins) <= 100 and max(x + w for x, _, w, _ in wins) >= 1000
    # At the frame's edge a window is shifted inside, never shrunk (a new size would cost a new interpreter).
    assert windows((1900, 1060, 20, 20), 384, 1920, 1080, overlap=96) == [(1536, 696, 384, 384)]


def face(x: float, i: int, entry: str | None, *, embedded: bool = True, size: float = 40.0) -> Observation:
    m = Match(entry, None, 0.8, 0.1, None) if entry else (Match("other", None, 0.1, None, None) if embedded else None)
    q = Quality(size_px=size, sharpness=100, yaw=0, detector_score=0.9)
    return Observation(np.array([x, 100, size, size], float), q, m, 0.6, i, i / 15, 1000 + i, embedded=embedded)


def test_the_tracker_asks_for_embeddings_per_track_not_per_frame() -> None:
    tracker = Tracker(TrackingSettings(embed_every=5, no_match_after=3, no_match_recheck=15, better_face=1.3))
    asked = []
    for i in range(40):
        box = np.array([100 + 3 * i, 100, 40, 40], float)
        (track,) = tracker.link("c", [box], i / 15)
        want = tracker.wants_embedding(track, Q, i)
        asked.append(want)
        tracker.update("c", i / 15, [face(100 + 3 * i, i, None, embedded=want)], [track])
    # A stranger: the first face, then every 5th frame until three faces matched no one; then a second look a second.
    assert [i for i, a in enumerate(asked) if a] == [0, 5, 10, 25]
    (track,) = tracker.active("c")
    bigger = Quality(size_px=60, sharpness=100, yaw=0, detector_score=0.9)
    assert tracker.wants_embedding(track, bigger, 30)  # a clearly better face is worth another look
    assert not tracker.wants_embedding(track, bigger, 30, whole=False)  # unless the frame's edge cuts it


def test_a_pending_hit_is_confirmed_on_the_next_frame_and_then_the_track_is_left_alone() -> None:
    tracker = Tracker(TrackingSettings(embed_every=5))
    hits, asked = [], []
    for i in range(10):
        (track,) = tracker.link("c", [np.array([100 + 2 * i, 100, 40, 40], float)], i / 15)
        want = tracker.wants_embedding(track, Q, i)
        asked.append(want)
        o = face(100 + 2 * i, i, "A" if want else None, embedded=want)
        hits += [d.entry_id for d in tracker.update("c", i / 15, [o], [track])]
    assert hits == ["A"]
    assert asked[:3] == [True, True, False] and not any(asked[2:])


def test_tracks_stay_alive_on_skipped_frames_but_a_face_that_left_does_not() -> None:
    tracker = Tracker(TrackingSettings(max_gap_s=1.0))
    tracker.update("c", 0.0, [face(100, 0, None)])
    for k in range(1, 40):  # 2.6 s of unchanged frames: the person stands still
        tracker.keep_alive("c", k / 15)
    assert len(tracker.active("c")) == 1
    tracker.update("c", 40 / 15, [])  # detected again: nobody there
    for k in range(41, 70):
        tracker.keep_alive("c", k / 15)
    assert tracker.active("c") == []


def test_the_pipeline_embeds_tracks_not_frames_and_keeps_the_demo_hit(analyser: FaceAnalyser, tmp_path: Path) -> None:
    import cv2

    from edge.demo import make_clip as demo_clip
    from edge.match import Matcher
    from edge.measure.bench import sample_image

    template = analyser.analyse(sample_image("astronaut.png"), largest_only=True)[0].embedding
    matcher = Matcher.build(
        [[("case-0001", None, None, None, template[None])]], name="t", version=1, sha256="", dimension=len(template),
        total_embeddings=1,
    )  # fmt: skip
    tracker = Tracker(TrackingSettings())
    pipe = FramePipeline(analyser, tracker, MatcherHolder(matcher), PipelineSettings(stage_threads=True))
    cap = cv2.VideoCapture(str(demo_clip(tmp_path / "clip.avi")))
    hits: list[str] = []
    i = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        pipe.submit(CapturedFrame("gate", RawPicture(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), i, i / 10, 0.0))
        i += 1
        hits += [d.entry_id for r in pipe.finished() for d in r.decisions]
    hits += [d.entry_id for r in pipe.drain() for d in r.decisions]
    pipe.stop()
    hits += [d.entry_id for d in tracker.finish()]
    assert hits == ["case-0001"]
    # 80 frames, each with one of two people: a handful of embeddings, not 80.
    assert pipe.counts["frames"] == 80
    assert pipe.counts["embedded"] <= 10


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080)])
def test_on_walkers_edge_raises_every_hit_the_plain_pipeline_raises_and_embeds_fewer_faces(
    analyser: FaceAnalyser, faces_dir: Path, size: tuple[int, int]
) -> None:
    cast = load_people(analyser, faces_dir, count=10, listed=5)
    clip = make_clip(analyser, faces_dir, size=size, frames=120, cast=cast)
    row = compare(analyser, clip, PipelineSettings(), TrackingSettings())
    edge, plain = row["edge"], row["reference"]
    assert edge["false_hits"] == [] and plain["false_hits"] == []
    assert edge["hits_found"] == edge["hits_expected"] >= plain["hits_found"]
    # Where the plain pipeline sees the same people it embeds more; at 1080p it misses the 30-60 px faces
    # (fewer hits, so fewer faces to embed), and edge still embeds far fewer faces than there are face-frames.
    assert edge["embedded"] < plain["embedded"] or plain["hits_found"] < edge["hits_found"]
    face_frames = sum(min(w.frames, len(clip.jpegs) - w.start) for w in clip.walkers)
    assert edge["embedded"] < face_frames / 3


def test_two_stages_decide_exactly_as_one_thread_does(analyser: FaceAnalyser, faces_dir: Path) -> None:
    """Replaying a recording must give the same tracks (event ids), whatever the threads' timing."""
    from edge.measure.stream import run_clip

    cast = load_people(analyser, faces_dir, count=10, listed=5)
    clip = make_clip(analyser, faces_dir, size=(640, 480), frames=90, cast=cast)
    seen = []
    for staged in (True, False):
        tracker = Tracker(TrackingSettings())
        pipe = FramePipeline(analyser, tracker, MatcherHolder(clip.matcher), PipelineSettings(stage_threads=staged))
        row = run_clip(clip, pipe)
        pipe.stop()
        seen.append((dict(pipe.counts), row["hits_found"]))
    assert seen[0] == seen[1]


def square(x: float, size: float = 40.0) -> np.ndarray:
    return np.array([x, 100, size, size], float)


def test_a_small_face_that_no_longer_overlaps_its_last_box_continues_its_track_when_nothing_else_is_near() -> None:
    tracker = Tracker(TrackingSettings(face_speed=8.0))
    tracker.update("c", 0.0, [face(100, 0, None)])
    # Two frames later (a frame without detection) a new track, with no speed yet, has moved 30 px: no overlap left.
    (track,) = tracker.link("c", [square(130)], 2 / 15)
    assert track is not None and track is tracker.active("c")[0]
    # Too far for the time that passed (8 face widths a second is 21 px in 2 frames for a 40 px face): a new face.
    strict = Tracker(TrackingSettings(face_speed=4.0))
    strict.update("c", 0.0, [face(100, 0, None)])
    assert strict.link("c", [square(130)], 2 / 15) == [None]
    # Never further than two face widths, however long ago the track was seen.
    assert tracker.link("c", [square(190)], 7 / 15) == [None]
    # Nor to a track not seen for more than half a second: someone appearing where a person was is someone new.
    tracker.keep_alive("c", 10 / 15)
    assert tracker.link("c", [square(130)], 10 / 15) == [None]


def test_two_candidates_in_reach_are_left_apart() -> None:
    tracker = Tracker(TrackingSettings(face_speed=8.0))
    tracker.update("c", 0.0, [face(100, 0, None)])
    # Two faces each within reach of the one track: which is the person is unknown, so neither continues it.
    assert tracker.link("c", [square(140), square(60)], 2 / 15) == [None, None]
    # A face of another size is someone else (nearer or further away).
    assert tracker.link("c", [square(130, size=80.0)], 2 / 15) == [None]


def test_a_decided_track_continued_by_reach_is_looked_at_again() -> None:
    """A person who steps in where a decided stranger was must not inherit the stranger's "no match"."""
    tracker = Tracker(TrackingSettings(face_speed=8.0, no_match_after=1, no_match_recheck=0))
    tracker.update("c", 0.0, [face(100, 0, None)])
    (track,) = tracker.active("c")
    assert tracker.embed_due(track) == float("inf")  # decided: no match
    (linked,) = tracker.link("c", [square(130)], 2 / 15)
    tracker.update("c", 2 / 15, [face(130, 2, None, embedded=False)], [linked])
    assert track.crossed and tracker.wants_embedding(track, Q, 2)
    # Where a decided face was heading, but long after it was last seen: someone else may have stepped in.
    moving = Tracker(TrackingSettings(no_match_after=1, no_match_recheck=0))
    moving.update("c", 0.0, [face(100, 0, None)])
    moving.update("c", 1 / 15, [face(110, 1, None, embedded=False)])
    (walker,) = moving.active("c")
    for k in range(2, 12):
        moving.keep_alive("c", k / 15)  # frames not looked at: the track is kept
    (linked,) = moving.link("c", [square(220)], 12 / 15)  # 11 frames on at 10 px a frame
    assert linked is walker
    moving.update("c", 12 / 15, [face(220, 12, None, embedded=False)], [linked])
    assert walker.crossed
    # Overlapping its last box, it is plainly the same face: still decided.
    calm = Tracker(TrackingSettings(no_match_after=1, no_match_recheck=0))
    calm.update("c", 0.0, [face(100, 0, None)])
    calm.update("c", 1 / 15, [face(104, 1, None, embedded=False)])
    assert not calm.active("c")[0].crossed


def test_a_decided_face_is_only_located_until_it_is_clearly_bigger() -> None:
    tracker = Tracker(TrackingSettings(no_match_after=1, no_match_recheck=30, better_face=1.3))
    tracker.update("c", 0.0, [face(100, 0, None)])
    (track,) = tracker.active("c")
    assert tracker.settled_px(track) == pytest.approx(52.0)  # 1.3 x the 40 px face it was decided on
    undecided = Tracker(TrackingSettings(no_match_after=3))
    undecided.update("c", 0.0, [face(100, 0, None)])
    assert undecided.settled_px(undecided.active("c")[0]) == 0.0
    hit = Tracker(TrackingSettings(min_frames=1))
    hit.update("c", 0.0, [face(100, 0, "A")])
    assert hit.settled_px(hit.active("c")[0]) == float("inf")


class Counting:
    """A detector that counts its calls (the real one does the work)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0

    def detect(self, *args: object, **kwargs: object) -> object:
        self.calls += 1
        return self.inner.detect(*args, **kwargs)  # type: ignore[attr-defined]


def test_after_the_hit_a_walker_is_only_located_and_never_embedded_again(
    analyser: FaceAnalyser, faces_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge.measure.stream import run_clip

    locate = Counting(analyser.locate_detector)
    monkeypatch.setattr(analyser, "locate_detector", locate)
    cast = load_people(analyser, faces_dir, count=10, listed=5)
    clip = make_clip(analyser, faces_dir, size=(1280, 720), frames=150, cast=cast)
    tracker = Tracker(TrackingSettings())
    pipe = FramePipeline(analyser, tracker, MatcherHolder(clip.matcher), PipelineSettings(stage_threads=False))
    embedded_per_track: dict[str, int] = {}
    original = tracker.update

    def update(camera: str, t: float, observations: list[Observation], links: object = None) -> object:
        decisions = original(camera, t, observations, links)  # type: ignore[arg-type]
        for tr in tracker.active(camera):
            embedded_per_track[tr.track_id] = tr.embedded
        return decisions

    monkeypatch.setattr(tracker, "update", update)
    row = run_clip(clip, pipe)
    pipe.stop()
    assert row["hits_found"] == row["hits_expected"] and row["false_hits"] == []
    assert locate.calls > 0  # decided faces were followed by the cheap pass
    # A hit needs two agreeing faces, a stranger three that match no one: nobody is embedded for nothing.
    assert max(embedded_per_track.values()) <= 4


def test_the_benchs_street_is_empty_most_of_the_time_and_its_busy_clip_is_not(analyser: FaceAnalyser, faces_dir: Path) -> None:
    """The issue's stream has people walking through a mostly empty street; the busy clip is the stress case."""
    from edge.measure.clips import BUSY_GAPS, STREET_GAPS

    cast = load_people(analyser, faces_dir, count=10, listed=5)
    street = make_clip(analyser, faces_dir, size=(320, 240), frames=300, cast=cast, gaps=STREET_GAPS)
    busy = make_clip(analyser, faces_dir, size=(320, 240), frames=300, cast=cast, gaps=BUSY_GAPS)
    assert street.walkers and street.occupied < 0.5 < busy.occupied
