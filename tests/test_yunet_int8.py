"""The full-integer YuNet (``yunet-int8``): an Edge TPU-shaped model the yunet plugin runs like the float one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.detectors.yunet import YuNetDetector
from edge.models import load_manifest
from edge.sources import load_image
from tests.conftest import ROOT, rows

OBAMA = "face_recognition/face_recognition__examples__obama_jpg.jpg"
# Operators the Edge TPU compiler maps (coral.ai "TensorFlow models on the Edge TPU", supported operations).
EDGE_TPU_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "CONCATENATION", "RESIZE_NEAREST_NEIGHBOR", "ADD", "PAD"}


def _analyser(model: str) -> FaceAnalyser:
    return FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu", detector={"model": model}))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def int8() -> FaceAnalyser:
    return _analyser("yunet-int8")


def test_the_int8_model_is_integer_end_to_end_in_edge_tpu_operators() -> None:
    from ai_edge_litert import interpreter

    manifest = load_manifest()
    spec = manifest.get("yunet-int8", "detector")
    assert spec.extra["family"] == "yunet" and spec.variant_of == "yunet"
    assert spec.extra["licence"].startswith("BSD-3-Clause") and spec.extra["source"]["package"] == "yuface"
    interp = interpreter.Interpreter(model_path=str(manifest.verified_path(spec)))
    assert {op["op_name"] for op in interp._get_ops_details()} <= EDGE_TPU_OPS
    io = interp.get_input_details() + interp.get_output_details()
    assert {np.dtype(d["dtype"]) for d in io} == {np.dtype(np.int8)}
    assert interp.get_input_details()[0]["quantization"] == (1.0, -128)  # int8 = pixel - 128, as the manifest says
    assert spec.extra["input"]["quantisation"]["zero_point"] == -128


def test_the_detector_setting_selects_it_and_it_finds_every_labelled_face(int8: FaceAnalyser, faces_dir: Path) -> None:
    det = int8.detector
    assert isinstance(det, YuNetDetector) and det.name == "yunet-int8"
    assert [r["path"] for r in rows("faces.csv") if not det.detect(load_image(faces_dir / r["path"]))] == []


def test_its_boxes_and_landmarks_stay_within_a_tenth_of_the_face_of_the_float_model(int8: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / OBAMA)
    ref, got = _analyser("yunet").detector.detect(img), int8.detector.detect(img)
    assert len(ref) == len(got) == 1
    width = ref[0].box[2]
    np.testing.assert_allclose(got[0].box, ref[0].box, atol=0.1 * width)
    np.testing.assert_allclose(got[0].keypoints, ref[0].keypoints, atol=0.1 * width)


def test_the_build_check_verifies_both_yunet_files_without_torch_or_yuface() -> None:
    command = [sys.executable, str(ROOT / "tools/build_yunet.py"), "--check"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok       yunet: " in out.stdout and "ok       yunet-int8: " in out.stdout


def test_the_int8_input_is_the_pixel_minus_128(int8: FaceAnalyser) -> None:
    det = int8.detector
    assert isinstance(det, YuNetDetector)
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    np.testing.assert_array_equal(det._io.pixels(pixels), pixels.astype(np.int16) - 128)
