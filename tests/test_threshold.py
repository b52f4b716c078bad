"""A passer-by is compared with every entry: the threshold must keep false matches rare for the watchlist's size."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.capture import CapturedFrame
from edge.config import PipelineSettings, TrackingSettings
from edge.match import Matcher, MatcherHolder
from edge.models import load_manifest
from edge.pipeline import FramePipeline
from edge.quality import Quality
from edge.sources import RawPicture, load_image
from edge.threshold import QualityRule, StricterRow, ThresholdPolicy
from edge.track import Tracker

BIG = Quality(size_px=120, sharpness=100, yaw=0, detector_score=0.9)
SMALL = Quality(size_px=36, sharpness=100, yaw=0, detector_score=0.9)


def shipped() -> ThresholdPolicy:
    return ThresholdPolicy.from_manifest(load_manifest().get("mobilefacenet", "embedder"))


def test_a_watchlist_the_calibrated_threshold_holds_is_matched_at_it() -> None:
    policy = shipped()
    assert policy.pair_far == 1e-4 and policy.max_fpir == 0.01
    assert policy.entries_held() == 100
    for entries in (1, 20, 100):
        assert policy.for_entries(entries) is policy
        assert policy.explain(entries) is None


def calibrated_embedders() -> list[str]:
    return [name for name, spec in load_manifest().models.items() if (spec.extra.get("threshold") or {}).get("stricter")]


@pytest.mark.parametrize("embedder", calibrated_embedders())
def test_a_larger_watchlist_is_matched_stricter_at_every_face_size_never_looser(embedder: str) -> None:
    policy = ThresholdPolicy.from_manifest(load_manifest().get(embedder, "embedder"))
    faces = [Quality(size_px=px, sharpness=100, yaw=0, detector_score=0.9) for px in (20, 36, 50, 120)]
    previous = policy
    for entries in (101, 500, 1_000, 10_000, 100_000, 1_000_000):
        stricter = policy.for_entries(entries)
        for q in faces:
            assert stricter.for_face(q) >= previous.for_face(q) >= policy.for_face(q), (entries, q.size_px)
            assert stricter.for_face(q) < 1.0  # a cosine can reach it: the watchlist still matches someone
        previous = stricter
    assert policy.for_entries(1_000).holds(1_000)


def test_the_shipped_embedder_holds_a_million_entries_at_a_clearly_higher_threshold() -> None:
    policy = shipped()
    assert policy.for_entries(1_000_000).holds(1_000_000)
    assert policy.for_entries(1_000_000).for_face(BIG) > policy.for_face(BIG) + 0.05
    note = policy.explain(10_000)
    assert note is not None and "only up to 100 entries" in note and f"{policy.for_entries(10_000).base:.3f}" in note


@pytest.mark.parametrize("max_fpir", [0.01, 0.02, 0.03, 0.05, 0.06, 0.1])
def test_the_row_chosen_is_the_loosest_that_holds_whatever_the_rounding(max_fpir: float) -> None:
    spec = load_manifest().get("mobilefacenet", "embedder")
    policy = ThresholdPolicy.from_manifest(spec, max_fpir=max_fpir)
    assert policy.entries_held() == round(max_fpir / 1e-4)
    for row in policy.stricter:
        entries = round(max_fpir / row.pair_far)  # exactly as many entries as the row holds
        assert policy.for_entries(entries).pair_far == row.pair_far, (entries, row.pair_far)
    assert policy.for_entries(round(max_fpir / 1e-4)) is policy


def test_a_tighter_max_fpir_makes_the_same_watchlist_stricter() -> None:
    spec = load_manifest().get("mobilefacenet", "embedder")
    loose = ThresholdPolicy.from_manifest(spec, max_fpir=0.01).for_entries(1_000)
    tight = ThresholdPolicy.from_manifest(spec, max_fpir=0.001).for_entries(1_000)
    assert tight.base > loose.base


def test_beyond_the_strictest_calibrated_row_the_operator_is_told_it_does_not_hold() -> None:
    rule = QualityRule(metric="size_px", below=64.0, raise_by=0.01)
    policy = ThresholdPolicy(0.6, (rule,), 1e-4, (StricterRow(1e-5, 0.65, (rule,)), StricterRow(1e-6, 0.7, (rule,))))
    huge = policy.for_entries(10**8)
    assert huge.base == 0.7 and not huge.holds(10**8)
    assert "split the watchlist" in (policy.explain(10**8) or "")


def test_an_embedder_calibrated_without_stricter_rows_warns_a_large_watchlist_and_says_how_to_fix_it() -> None:
    policy = ThresholdPolicy(0.6, (), 1e-4)
    assert policy.for_entries(5_000) is policy and not policy.holds(5_000)
    assert "run `edge calibrate --write`" in (policy.explain(5_000) or "")


def test_a_stricter_row_keeps_the_rules_that_are_not_about_size() -> None:
    blurred = QualityRule(metric="sharpness", below=50.0, raise_by=0.03)
    policy = ThresholdPolicy(0.6, (blurred,), 1e-4, (StricterRow(1e-5, 0.65, ()),))
    soft = Quality(size_px=120, sharpness=20, yaw=0, detector_score=0.9)
    assert policy.for_entries(1_000).for_face(soft) == pytest.approx(0.68)


def test_an_operator_override_is_used_as_given_whatever_the_size() -> None:
    spec = load_manifest().get("mobilefacenet", "embedder")
    policy = ThresholdPolicy.from_manifest(spec, override=0.7)
    assert policy.for_entries(1_000_000).base == 0.7 and policy.explain(1_000_000) is None


def test_a_watchlist_too_large_for_the_shipped_threshold_no_longer_matches_a_borderline_face(
    analyser: FaceAnalyser, faces_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: one threshold for any size; at its pair rate of 1e-4, 50,000 entries give each face 5 expected false matches."""
    image = load_image(faces_dir / "face_recognition/face_recognition__examples__obama-480p_jpg.jpg")
    probe = analyser.analyse(image, largest_only=True)[0].embedding.astype(np.float64)
    policy = analyser.threshold
    strict = policy.for_entries(50_000)
    # An entry this face scores exactly halfway between the two thresholds against.
    score = (policy.base + strict.base) / 2
    rng = np.random.default_rng(0)
    other = rng.normal(size=probe.shape)
    other -= (other @ probe) * probe
    other /= np.linalg.norm(other)
    entry = (score * probe + np.sqrt(1 - score**2) * other).astype(np.float32)
    filler = rng.normal(size=(50_000, probe.size)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)

    def hits(entries: int) -> list[str]:
        rows = [("listed", None, None, None, entry[None])]
        rows += [(f"other-{i}", None, None, None, filler[i][None]) for i in range(entries - 1)]
        matcher = Matcher.build([rows], name="w", version=entries, sha256="", dimension=probe.size, total_embeddings=entries)
        pipe = FramePipeline(analyser, Tracker(TrackingSettings()), MatcherHolder(matcher), PipelineSettings(stage_threads=False))
        pipe.submit(CapturedFrame("folder", RawPicture(image), 0, 0.0, 0.0, still=True))
        found = [d.entry_id for r in pipe.drain() for d in r.decisions]
        pipe.stop()
        return found

    assert hits(20) == ["listed"]
    with caplog.at_level(logging.INFO, logger="edge.pipeline"):
        assert hits(50_000) == []
    assert f"matched at {strict.base:.3f}" in caplog.text


@pytest.mark.parametrize("entries", [0, 50, 20_000])
def test_the_status_heartbeat_says_what_the_watchlist_is_matched_at(tmp_path: Path, entries: int) -> None:
    import jsonschema
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.config import load_settings
    from edge.daemon import Daemon
    from edge.db import connect
    from edge.schemas import load as load_schema
    from edge.watchlist.keys import key_id
    from edge.watchlist.store import WatchlistStore
    from tools.synthetic import SPACE, random_entries, signed_bundle

    key = Ed25519PrivateKey.generate()
    store = WatchlistStore(connect(tmp_path / "data" / "edge.db"))
    if entries:
        bundle = signed_bundle(random_entries(entries), key)
        assert store.apply(bundle, {key_id(key.public_key()): key.public_key()}, embedding_space=SPACE).ok
    store.conn.close()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'device_id = "pole-9"\ndata_dir = "{tmp_path / "data"}"\n[[sources]]\ncamera = "gate"\nurl = "{tmp_path / "none.avi"}"\n'
        '[mqtt]\nenabled = false\n[recognition]\naccelerator = "cpu"\n[watchlist]\nname = "fleet"\n'
    )
    status = Daemon(load_settings(cfg)).status()
    jsonschema.validate(status, load_schema("status"))
    if not entries:  # nothing to match yet: nothing claimed
        assert status["watchlist"]["threshold"] is None and status["watchlist"]["holds_max_fpir"] is None
        return
    # 20,000 entries at 1e-4 would expect two false matches per stranger's face: it is matched at a stricter row.
    expected = shipped().for_entries(entries)
    assert status["watchlist"]["threshold"] == round(expected.base, 4) and status["watchlist"]["holds_max_fpir"] is True
    assert (status["watchlist"]["threshold"] > shipped().base) == (entries > 100)
