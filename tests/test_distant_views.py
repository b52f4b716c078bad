"""Enrolment views: a real photo's face shrunk to distant sizes is found where it was placed and stays its person."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.cli import main
from edge.config import EnrolViewSettings
from edge.distant_views import DistantViews, calibration_mismatch, view_embeddings
from edge.measure.protocol import read_manifest
from edge.sources import load_image
from edge.watchlist.bundle import iter_entries, read_bundle


def test_views_of_a_photo_are_embedded_at_each_smaller_size_and_match_the_photo(analyser: FaceAnalyser, faces_dir: Path) -> None:
    samples = read_manifest(faces_dir / "faces.csv")
    by_id: dict[str, list[Path]] = {}
    for s in samples:
        by_id.setdefault(s.identity, []).append(s.path)
    person, other = (paths[0] for paths in list(by_id.values())[:2])
    image = load_image(person)
    face = analyser.analyse(image, largest_only=True, apply_gate=False)[0]
    assert face.detection.box[2] > 60
    views = view_embeddings(analyser, image, face.detection.box, DistantViews(sizes=(32, 48), jpeg_quality=85), seed=3)
    assert len(views) == 2
    stranger = analyser.analyse(load_image(other), largest_only=True, apply_gate=False)[0].embedding
    for e in views:
        assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-3)
        assert float(e @ face.embedding) > 0.6  # the same person, if less alike than the photo to itself
        assert float(e @ face.embedding) > float(e @ stranger) + 0.3
    # Deterministic for a seed; a size the face is not wider than is skipped, not enlarged to.
    again = view_embeddings(analyser, image, face.detection.box, DistantViews(sizes=(32, 48), jpeg_quality=85), seed=3)
    assert np.allclose(np.stack(views), np.stack(again))
    small = face.detection.box.copy()
    small[2] = 40.0
    assert len(view_embeddings(analyser, image, small, DistantViews(sizes=(48,)))) == 0


def test_view_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="16 px"):
        DistantViews(sizes=(8,))
    with pytest.raises(ValueError, match="256 px"):  # the bound recognition.enrol_views has (--enrol-views too)
        DistantViews(sizes=(32, 5000))
    with pytest.raises(ValueError, match="1-100"):
        DistantViews(jpeg_quality=0)


def test_watchlist_build_enrols_each_photo_with_its_distant_views_unless_the_config_turns_them_off(
    faces_dir: Path, tmp_path: Path
) -> None:
    photo = read_manifest(faces_dir / "faces.csv")[0].path
    (tmp_path / "photos" / "case-1").mkdir(parents=True)
    shutil.copy(photo, tmp_path / "photos" / "case-1" / photo.name)
    assert main(["watchlist", "keygen", "--out", str(tmp_path / "keys")]) == 0
    off = tmp_path / "off.toml"
    off.write_text("[recognition.enrol_views]\nsizes = []\n", encoding="utf-8")
    held = {}
    for name, extra in (("default", []), ("off", ["--config", str(off)])):
        args = ["watchlist", "build", "--photos", str(tmp_path / "photos"), "--name", "city", "--version", "1",
                "--key", str(tmp_path / "keys" / "watchlist.key"), "--out", str(tmp_path / name), "--quiet", *extra]  # fmt: skip
        assert main(args) == 0
        [entry] = list(iter_entries(read_bundle(tmp_path / name)))
        held[name] = entry.embeddings
    # The photo's own embedding first, then one per default view size (32, 40 and 48 px); the same first row either way.
    assert held["default"].shape == (4, 192) and held["off"].shape == (1, 192)
    assert np.allclose(held["default"][0], held["off"][0], atol=1e-2)  # float16 in the bundle
    assert (held["default"][1:] @ held["default"][0] > 0.6).all()


def test_enrolment_warns_when_the_threshold_was_calibrated_with_other_views(analyser: FaceAnalyser) -> None:
    assert calibration_mismatch(analyser, DistantViews.from_settings(EnrolViewSettings())) is None  # as shipped
    assert "calibrated with enrolment views" in (calibration_mismatch(analyser, None) or "")
    assert calibration_mismatch(analyser, DistantViews(sizes=(32,))) is not None
