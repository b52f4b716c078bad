"""Camera-like distant scenes: faces sized without the detector under test, every photo kept, found by the default."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.detectors.base import Detection
from edge.measure import camera_scenes
from edge.measure.protocol import read_manifest
from edge.sources import load_image
from tests.conftest import ROOT

REFERENCE = ROOT / "tools" / "data" / "distant_reference.csv"
LOOKALIKES = ("mask", "chelsea", "horse")


@pytest.fixture(scope="module")
def camera_set(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("camera")
    nonfaces = read_manifest(faces_dir / "nonfaces.csv")
    backgrounds = [load_image(s.path) for s in nonfaces if "mask" not in s.path.name]
    lookalikes = [load_image(s.path) for s in nonfaces if any(k in s.path.name for k in LOOKALIKES)]
    with REFERENCE.open(encoding="utf-8") as fh:
        table = {r["path"]: (float(r["x"]), float(r["y"]), float(r["w"]), float(r["h"])) for r in csv.DictReader(fh) if r["w"]}
    sources = camera_scenes.reference_boxes(read_manifest(faces_dir / "faces.csv")[::31], table, faces_dir)
    for variant in camera_scenes.VARIANTS:
        camera_scenes.build_camera_set(sources, backgrounds, lookalikes, out, variant, seed=3)
    camera_scenes.build_camera_nonfaces(backgrounds, lookalikes, out, count=3, seed=3)
    return out


def truth(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def at(faces: list[Detection], row: dict[str, str]) -> list[Detection]:
    box = np.array([float(row[k]) for k in "xywh"])
    centre = box[:2] + box[2:] / 2
    return [f for f in faces if (np.abs(f.box[:2] + f.box[2:] / 2 - centre) < box[2] / 2).all()]


def test_every_source_photo_becomes_a_scene_with_its_face_30_to_60_px(camera_set: Path) -> None:
    for variant in camera_scenes.VARIANTS:
        rows = truth(camera_set / variant / "truth.csv")
        labelled = [r for r in rows if r["role"] == "labelled"]
        assert len(labelled) == 3 == len(read_manifest(camera_set / variant / "faces.csv"))
        assert all(30 <= float(r["w"]) <= 60 for r in labelled)
        # In crowded scenes the labelled person is the largest, so the eval's largest-face rule picks them.
        for r in labelled:
            others = [o for o in rows if o["path"] == r["path"] and o["role"] == "other"]
            assert all(float(o["w"]) < float(r["w"]) for o in others)


def test_the_default_detector_finds_each_labelled_face_where_it_was_placed(analyser: FaceAnalyser, camera_set: Path) -> None:
    for variant in camera_scenes.VARIANTS:
        for r in truth(camera_set / variant / "truth.csv"):
            if r["role"] == "labelled":
                faces = analyser.detector.detect(load_image(camera_set / variant / r["path"]))
                assert len(at(faces, r)) == 1, f"{variant}/{r['path']}: {[f.box.round() for f in faces]}"


def test_face_free_camera_scenes_with_face_like_objects_have_no_face(analyser: FaceAnalyser, camera_set: Path) -> None:
    found = {s.path.name: len(analyser.detector.detect(load_image(s.path))) for s in read_manifest(camera_set / "nonfaces.csv")}
    assert {p: n for p, n in found.items() if n} == {}
