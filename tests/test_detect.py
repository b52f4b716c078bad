"""Detection on real photos: every labelled face found, group photos counted, nothing in non-faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.detectors.base import nms_detections
from edge.detectors.blazeface import LEFT_EYE, MOUTH, NOSE, RIGHT_EYE, BlazeFaceDetector
from edge.sources import load_image
from tests.conftest import rows

OBAMA = "face_recognition/face_recognition__examples__obama_jpg.jpg"
DISTANT_GROUP = "compreface/CompreFace__embedding-calculator__sample_images__016_8_jpg.jpg"
# The annotation counts the two men the file is named after; a girl's face at the lower right
# edge is a real third face, which the fine pass finds.
OBAMA_AND_BIDEN = "face_recognition/face_recognition__examples__knn_examples__test__obama_and_biden_jpg.jpg"
EXTRA_REAL_FACES = {OBAMA_AND_BIDEN: 1}


@pytest.fixture(scope="module")
def analyser() -> FaceAnalyser:
    """BlazeFace's own behaviour, whichever detector is the default (YuNet's: tests/test_yunet.py)."""
    return FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu", detector={"model": "blazeface-full-range"}))  # type: ignore[arg-type]


def test_a_face_is_found_in_every_labelled_photo(analyser: FaceAnalyser, faces_dir: Path) -> None:
    det = analyser.detector
    missed = [r["path"] for r in rows("faces.csv") if not det.detect(load_image(faces_dir / r["path"]))]
    assert missed == []


@pytest.mark.parametrize(
    "row",
    # The crowd of 26-38 px faces is below the default minimum: see the min_face_px test below.
    [pytest.param(r, id=Path(r["path"]).name) for r in rows("group_photos.csv") if r["faces"] and r["path"] != DISTANT_GROUP],
)
def test_group_photos_have_the_annotated_number_of_faces(analyser: FaceAnalyser, faces_dir: Path, row: dict[str, str]) -> None:
    assert len(analyser.detector.detect(load_image(faces_dir / row["path"]))) == int(row["faces"]) + EXTRA_REAL_FACES.get(
        row["path"], 0
    )


def test_a_lower_minimum_face_size_finds_the_smallest_faces_of_a_crowd(analyser: FaceAnalyser, faces_dir: Path) -> None:
    """Eight people of 26-38 px: the default 30 px minimum misses the smallest, 24 px finds all eight."""
    photo = load_image(faces_dir / DISTANT_GROUP)
    finer = BlazeFaceDetector(analyser.detector.model, min_face_px=24)  # type: ignore[attr-defined]
    assert len(finer.detect(photo)) == 8


def test_no_face_is_found_in_images_without_faces(analyser: FaceAnalyser, faces_dir: Path) -> None:
    found = {r["path"]: len(analyser.detector.detect(load_image(faces_dir / r["path"]))) for r in rows("nonfaces.csv")}
    assert {p: n for p, n in found.items() if n} == {}


@pytest.mark.parametrize("margin", [0.0, 0.1])
def test_faces_that_fill_the_frame_are_found(analyser: FaceAnalyser, faces_dir: Path, margin: float) -> None:
    missed = []
    for r in rows("faces.csv")[::3]:
        img = load_image(faces_dir / r["path"])
        d = max(analyser.detector.detect(img), key=lambda d: d.area)
        x, y, w, h = d.box
        crop = img[
            int(max(0, y - margin * h)) : int(y + h * (1 + margin)),
            int(max(0, x - margin * w)) : int(x + w * (1 + margin)),
        ]
        if not analyser.detector.detect(crop):
            missed.append(r["path"])
    assert missed == []


def test_keypoints_sit_in_anatomical_order(analyser: FaceAnalyser, faces_dir: Path) -> None:
    d = analyser.detector.detect(load_image(faces_dir / OBAMA))[0]
    kp = d.keypoints
    assert kp[RIGHT_EYE][0] < kp[NOSE][0] < kp[LEFT_EYE][0]
    assert kp[RIGHT_EYE][1] < kp[NOSE][1] < kp[MOUTH][1]
    x, y, w, h = d.box
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in kp[:4])


@pytest.mark.parametrize(("canvas_w", "canvas_h", "ox", "oy"), [(1000, 450, 650, 40), (450, 1000, 60, 600)])
def test_boxes_are_in_frame_pixels_for_any_size_and_aspect(
    analyser: FaceAnalyser, faces_dir: Path, canvas_w: int, canvas_h: int, ox: int, oy: int
) -> None:
    img = cv2.resize(load_image(faces_dir / OBAMA), (300, 375), interpolation=cv2.INTER_AREA)
    ref = analyser.detector.detect(img)[0]
    canvas = np.full((canvas_h, canvas_w, 3), 90, dtype=np.uint8)
    canvas[oy : oy + img.shape[0], ox : ox + img.shape[1]] = img
    found = analyser.detector.detect(canvas)
    assert len(found) == 1
    shift = np.array([ox, oy, 0, 0])
    np.testing.assert_allclose(found[0].box, ref.box + shift, atol=0.15 * ref.box[2])
    np.testing.assert_allclose(found[0].keypoints, ref.keypoints + shift[:2], atol=0.15 * ref.box[2])


def test_scaling_the_frame_scales_the_box(analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / OBAMA)
    ref = analyser.detector.detect(img)[0]
    big = cv2.resize(img, None, fx=2.0, fy=2.0)
    found = analyser.detector.detect(big)[0]
    np.testing.assert_allclose(found.box, ref.box * 2.0, atol=0.08 * ref.box[2] * 2)


def test_duplicate_detections_from_overlapping_passes_merge_into_one(analyser: FaceAnalyser, faces_dir: Path) -> None:
    d = analyser.detector.detect(load_image(faces_dir / OBAMA))[0]
    from edge.detectors.base import Detection

    shifted = Detection(box=d.box + np.array([3, 2, 0, 0]), keypoints=d.keypoints, score=d.score - 0.1)
    merged = nms_detections([shifted, d], 0.3)
    assert merged == [d]
