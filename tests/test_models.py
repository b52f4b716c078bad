"""Models: every file is checked against the manifest, and a bad one fails at start with the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.errors import ModelError, ModelHashMismatchError, ModelLoadError, ModelMissingError
from edge.models import default_models_dir, load_manifest, sha256_file
from edge.runtime import load_model


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "models"
    shutil.copytree(default_models_dir(), dest)
    return dest


def test_every_shipped_model_matches_its_manifest_entry() -> None:
    manifest = load_manifest()
    assert {"blazeface-full-range", "blazeface-short-range", "mobilefacenet"} <= set(manifest.models)
    for spec in manifest.models.values():
        assert sha256_file(manifest.verified_path(spec)) == spec.sha256
        assert spec.extra["licence"] and spec.extra["source"]["package"]


def test_the_embedder_has_a_calibrated_threshold_with_its_provenance() -> None:
    spec = load_manifest().get("mobilefacenet", "embedder")
    threshold = spec.extra["threshold"]
    assert 0.3 < threshold["base"] < 0.9
    assert threshold["calibration"]["impostor_pairs"] > 10_000
    # Small faces are held to at least the base; the distant bands were calibrated on their own probes.
    assert all(r["metric"] == "size_px" and r["raise_by"] >= 0 for r in threshold["quality_rules"])
    # The result was also checked on people it was not computed from: each half of the identities against the other.
    holdout = threshold["calibration"]["holdout"]
    assert len(holdout) == 2 and all(row["base"]["held_out_pairs"] > 1000 for row in holdout)


def test_a_missing_model_names_the_file_and_the_fix(models_copy: Path) -> None:
    (models_copy / "MobileFaceNet_prelu.tflite").unlink()
    with pytest.raises(ModelMissingError, match=r"MobileFaceNet_prelu\.tflite.*missing.*tools/build_models\.py"):
        FaceAnalyser.from_settings(RecognitionSettings(models_dir=models_copy))


def test_an_altered_model_is_refused(models_copy: Path) -> None:
    path = models_copy / "face_detection_full_range.tflite"
    data = bytearray(path.read_bytes())
    data[5000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelHashMismatchError, match=r"face_detection_full_range\.tflite.*altered"):
        FaceAnalyser.from_settings(RecognitionSettings(models_dir=models_copy))


def test_a_truncated_model_is_refused(models_copy: Path) -> None:
    path = models_copy / "MobileFaceNet_prelu.tflite"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelHashMismatchError, match="truncated"):
        FaceAnalyser.from_settings(RecognitionSettings(models_dir=models_copy))


def test_a_corrupt_model_with_a_matching_manifest_is_refused_by_the_runtime(models_copy: Path) -> None:
    # Someone rewrote the manifest to match garbage: the runtime still refuses it, with the file named.
    path = models_copy / "face_detection_short_range.tflite"
    path.write_bytes(b"\x00" * 4096)
    raw = json.loads((models_copy / "manifest.json").read_text())
    raw["models"]["blazeface-short-range"].update(sha256=sha256_file(path), size=4096)
    (models_copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"face_detection_short_range\.tflite"):
        load_model(load_manifest(models_copy), "blazeface-short-range", kind="detector")


def test_an_unknown_embedder_lists_the_choices() -> None:
    with pytest.raises(ModelError, match=r"unknown embedder 'facenet512'.*mobilefacenet"):
        FaceAnalyser.from_settings(RecognitionSettings(embedder="facenet512"))


def test_edgetpu_requested_without_a_compiled_variant_falls_back_to_cpu(caplog: pytest.LogCaptureFixture) -> None:
    model = load_model(load_manifest(), "mobilefacenet", kind="embedder", accelerator="edgetpu")
    assert model.accelerator == "cpu"
    assert "no _edgetpu variant" in caplog.text
