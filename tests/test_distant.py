"""Faces at a distance: 30-60 px faces in full-HD scenes are found at the right place, once, and nothing else."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.detectors.base import Detection
from edge.detectors.blazeface import BlazeFaceDetector
from edge.measure.protocol import read_manifest
from edge.measure.scenes import build_distant_set, build_nonface_scenes, place_face
from edge.runtime import resize_input_flatbuffer
from edge.sources import load_image

SCENES = 8


@pytest.fixture(scope="module")
def analyser() -> FaceAnalyser:
    """BlazeFace's own behaviour, whichever detector is the default (YuNet's: tests/test_yunet.py)."""
    return FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu", detector={"model": "blazeface-full-range"}))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scenes(analyser: FaceAnalyser, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 12th labelled photo, its face shrunk to 30-60 px in a 1920x1080 scene; the face-free images upscaled."""
    out = tmp_path_factory.mktemp("distant")
    nonfaces = read_manifest(faces_dir / "nonfaces.csv")
    backgrounds = [load_image(s.path) for s in nonfaces if "mask" not in s.path.name]
    samples = read_manifest(faces_dir / "faces.csv")[::12][:SCENES]
    build_distant_set(samples, backgrounds, analyser.detector, out, seed=1)
    build_nonface_scenes([(s.path.name, load_image(s.path)) for s in nonfaces], out)
    return out


def truth(scenes: Path) -> list[tuple[Path, np.ndarray]]:
    with (scenes / "truth.csv").open() as f:
        return [(scenes / r["path"], np.array([float(r[k]) for k in "xywh"])) for r in csv.DictReader(f)]


def at(faces: list[Detection], box: np.ndarray) -> list[Detection]:
    """Detections whose centre lies within half a face width of the placed face's centre."""
    centre = box[:2] + box[2:] / 2
    return [f for f in faces if (np.abs(f.box[:2] + f.box[2:] / 2 - centre) < box[2] / 2).all()]


def test_small_faces_in_full_hd_scenes_are_found_where_they_were_placed(analyser: FaceAnalyser, scenes: Path) -> None:
    placed = truth(scenes)
    assert len(placed) == SCENES and all(30 <= box[2] <= 60 for _, box in placed)
    for path, box in placed:
        faces = analyser.detector.detect(load_image(path))
        found = at(faces, box)
        assert len(found) == 1, f"{path.name}: face at {box.round()} found {len(found)} times"
        assert 0.6 * box[2] <= found[0].width <= 1.5 * box[2]
        assert len(faces) == 1, f"{path.name}: extra detections {[f.box.round() for f in faces if f not in found]}"


def test_the_full_frame_pass_alone_finds_none_of_them(analyser: FaceAnalyser, scenes: Path) -> None:
    """Why the fine pass exists: shrunk to the 192 px input, a 30-60 px face is 3-6 px."""
    coarse = BlazeFaceDetector(analyser.detector.model, min_face_px=None)  # type: ignore[attr-defined]
    assert [path.name for path, box in truth(scenes) if at(coarse.detect(load_image(path)), box)] == []


def test_no_face_is_found_in_face_free_images_upscaled_to_full_hd(analyser: FaceAnalyser, scenes: Path) -> None:
    found = {s.path.name: len(analyser.detector.detect(load_image(s.path))) for s in read_manifest(scenes / "nonfaces.csv")}
    assert len(found) >= 20
    assert {name: n for name, n in found.items() if n} == {}


def test_a_face_seen_by_both_passes_is_reported_once(analyser: FaceAnalyser, faces_dir: Path) -> None:
    """A 200 px face is found by the full-frame pass and by the fine pass: merged in frame pixels, one face."""
    photo = load_image(faces_dir / "face_recognition/face_recognition__examples__obama_jpg.jpg")
    box = max(analyser.detector.detect(photo), key=lambda d: d.area).box
    scene = np.full((1080, 1920, 3), 110, dtype=np.uint8)
    placed = place_face(scene, photo, box, 200.0, np.random.default_rng(3))
    faces = analyser.detector.detect(scene)
    assert len(faces) == 1 and len(at(faces, np.array(placed.box))) == 1


def test_a_face_across_two_overlapping_regions_is_found_once(analyser: FaceAnalyser, faces_dir: Path) -> None:
    photo = load_image(faces_dir / "face_recognition/face_recognition__examples__obama_jpg.jpg")
    box = max(analyser.detector.detect(photo), key=lambda d: d.area).box
    scene = np.full((1080, 1920, 3), 110, dtype=np.uint8)
    placed = np.array(place_face(scene, photo, box, 40.0, np.random.default_rng(3)).box)
    split = int(placed[0] + placed[2] / 2)  # the regions' shared border runs through the face
    regions = [(0, 0, split + 30, 1080), (split - 30, 0, 1920 - split + 30, 1080)]
    faces = analyser.detector.detect(scene, regions)
    assert len(faces) == 1 and len(at(faces, placed)) == 1


def test_regions_limit_where_small_faces_are_searched(analyser: FaceAnalyser, scenes: Path) -> None:
    path, box = truth(scenes)[0]
    scene = load_image(path)
    x, y, w, h = (int(v) for v in box)
    around = (max(0, x - 100), max(0, y - 100), w + 200, h + 200)
    elsewhere = (0, 0, 200, 200) if x > 400 or y > 400 else (1600, 800, 300, 250)
    assert len(at(analyser.detector.detect(scene, [around]), box)) == 1
    assert at(analyser.detector.detect(scene, [elsewhere]), box) == []


def test_a_larger_input_changes_only_the_input_shape_and_upsampling_sizes(analyser: FaceAnalyser) -> None:
    model = analyser.detector.model  # type: ignore[attr-defined]
    original = model.path.read_bytes()
    assert resize_input_flatbuffer(original, model.input_shape, 192, 192) == original
    bigger = resize_input_flatbuffer(original, model.input_shape, 576, 1024)
    assert len(bigger) == len(original)
    assert sum(a != b for a, b in zip(bigger, original, strict=True)) <= 3 * 8 + 2 * 4
    big = model.with_input_size(576, 1024)
    assert big.input_shape == (1, 576, 1024, 3)
    assert [big.interpreter.get_tensor(i).shape[1] for i in big.output_indices] == [36864, 36864]
