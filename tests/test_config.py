"""Configuration: unknown keys and bad values fail at start, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_settings
from edge.errors import ConfigError


def test_a_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('device_id = "pole-17"\n[recognition]\nembedder = "mobilefacenet"\n')
    s = load_settings(cfg)
    assert s.device_id == "pole-17"
    assert s.recognition.detector.model == "yunet"
    assert s.recognition.accelerator == "auto"


def test_an_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[recognition]\nthreshhold = 0.4\n")
    with pytest.raises(ConfigError, match=r"recognition\.threshhold: unknown key"):
        load_settings(cfg)


def test_a_bad_value_names_the_key_and_what_was_given(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[recognition]\naccelerator = "gpu"\n')
    with pytest.raises(ConfigError, match=r"recognition\.accelerator: .*'gpu'"):
        load_settings(cfg)


def test_broken_toml_and_missing_files_are_clear(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[recognition\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")


def test_environment_variables_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_RECOGNITION__THREADS", "3")
    cfg = tmp_path / "edge.toml"
    cfg.write_text('device_id = "pole-17"\n')
    assert load_settings(cfg).recognition.threads == 3


def test_a_region_outside_the_camera_frame_is_refused_naming_the_camera(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    camera = '[[sources]]\ncamera = "gate"\nurl = "0"\n'
    cfg.write_text(camera + "width = 1920\nheight = 1080\nregions = [[0, 300, 1920, 780], [1800, 0, 200, 100]]\n")
    with pytest.raises(ConfigError, match=r"sources\.0.*regions\[1\].*outside the 1920x1080 frame"):
        load_settings(cfg)
    cfg.write_text(camera + "regions = [[0, 300, 1920, 780]]\n[recognition.detector]\nmin_face_px = 24\n")
    s = load_settings(cfg)
    assert s.sources[0].regions == [(0, 300, 1920, 780)]
    assert s.recognition.detector.min_face_px == 24
