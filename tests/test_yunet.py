"""The YuNet detector plugin: faces and 5 landmarks on real photos, any frame size, confirmed faces only."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.align import ARCFACE_112, align_face, fit
from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.detectors import yunet
from edge.detectors.yunet import YuNetDetector
from edge.errors import ModelError
from edge.measure.camera_scenes import drawn_face
from edge.measure.scenes import cover
from edge.sources import load_image
from tests.conftest import rows

OBAMA = "face_recognition/face_recognition__examples__obama_jpg.jpg"


@pytest.fixture(scope="module")
def yunet_analyser() -> FaceAnalyser:
    return FaceAnalyser.from_settings(RecognitionSettings(accelerator="cpu", detector={"model": "yunet"}))  # type: ignore[arg-type]


def test_the_model_setting_picks_the_plugin(yunet_analyser: FaceAnalyser) -> None:
    assert isinstance(yunet_analyser.detector, YuNetDetector)
    assert yunet_analyser.detector.verifier is not None


def test_only_a_blazeface_model_can_confirm_faces() -> None:
    settings = RecognitionSettings(accelerator="cpu", detector={"model": "yunet", "yunet": {"verify_with": "yunet"}})  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="cannot confirm"):
        FaceAnalyser.from_settings(settings)


def test_a_face_is_found_in_every_labelled_photo(yunet_analyser: FaceAnalyser, faces_dir: Path) -> None:
    det = yunet_analyser.detector
    assert [r["path"] for r in rows("faces.csv") if not det.detect(load_image(faces_dir / r["path"]))] == []


def test_five_landmarks_sit_in_anatomical_order(yunet_analyser: FaceAnalyser, faces_dir: Path) -> None:
    d = yunet_analyser.detector.detect(load_image(faces_dir / OBAMA))[0]
    kp = d.keypoints
    assert kp.shape == (5, 2)
    assert kp[yunet.RIGHT_EYE][0] < kp[yunet.NOSE][0] < kp[yunet.LEFT_EYE][0]
    assert kp[yunet.RIGHT_MOUTH][0] < kp[yunet.NOSE][0] < kp[yunet.LEFT_MOUTH][0]
    assert max(kp[yunet.RIGHT_EYE][1], kp[yunet.LEFT_EYE][1]) < kp[yunet.NOSE][1] < kp[yunet.RIGHT_MOUTH][1]


def test_the_five_points_land_on_the_arcface_template(yunet_analyser: FaceAnalyser, faces_dir: Path) -> None:
    """Aligned with all five points, the crop's own landmarks (found again) sit where ArcFace's template puts them."""
    img = load_image(faces_dir / OBAMA)
    d = yunet_analyser.detector.detect(img)[0]
    # A least-squares fit of 5 points to 5: each lands within a few template pixels (faces differ from the template).
    np.testing.assert_allclose(cv2.transform(d.keypoints[None], fit(d.keypoints, "arcface-112", 112))[0], ARCFACE_112, atol=5)
    crop = align_face(img, d.keypoints)
    again = yunet_analyser.detector.detect(np.pad(crop, ((56, 56), (56, 56), (0, 0))))[0]
    np.testing.assert_allclose(again.keypoints - 56, ARCFACE_112, atol=6)


@pytest.mark.parametrize(
    ("canvas_w", "canvas_h", "ox", "oy"), [(1000, 450, 650, 40), (450, 1000, 60, 600), (1920, 1080, 900, 500)]
)
def test_boxes_are_in_frame_pixels_for_any_size_and_aspect(
    yunet_analyser: FaceAnalyser, faces_dir: Path, canvas_w: int, canvas_h: int, ox: int, oy: int
) -> None:
    img = cv2.resize(load_image(faces_dir / OBAMA), (300, 375), interpolation=cv2.INTER_AREA)
    ref = yunet_analyser.detector.detect(img)[0]
    canvas = np.full((canvas_h, canvas_w, 3), 90, dtype=np.uint8)
    canvas[oy : oy + img.shape[0], ox : ox + img.shape[1]] = img
    found = yunet_analyser.detector.detect(canvas)
    assert len(found) == 1
    shift = np.array([ox, oy, 0, 0])
    # The canvas runs at another input scale than the photo alone (min_face_px sets it), so allow 12% of the face.
    np.testing.assert_allclose(found[0].box, ref.box + shift, atol=0.12 * ref.box[2])
    np.testing.assert_allclose(found[0].keypoints, ref.keypoints + shift[:2], atol=0.12 * ref.box[2])


def test_no_face_is_found_in_images_without_faces(yunet_analyser: FaceAnalyser, faces_dir: Path) -> None:
    found = {r["path"]: len(yunet_analyser.detector.detect(load_image(faces_dir / r["path"]))) for r in rows("nonfaces.csv")}
    assert {p: n for p, n in found.items() if n} == {}


def test_face_like_objects_are_not_faces_once_confirmed(yunet_analyser: FaceAnalyser, faces_dir: Path) -> None:
    """A motorcycle's headlight fools YuNet alone; BlazeFace's confirmation rejects it, and the drawn faces."""
    det = yunet_analyser.detector
    assert isinstance(det, YuNetDetector)
    bike = load_image(faces_dir / "nonfaces" / "scikit-image-data__motorcycle_right_png.png")
    unconfirmed = YuNetDetector(det.model, min_face_px=30.0, settings=yunet.YuNetSettings(refine_face_px=None))
    rng = np.random.default_rng(0)
    canvas = np.full((1080, 1920, 3), 128, np.uint8)
    canvas[:, 960:] = cover(bike, 960, 1080)  # as in the distant scenes: the headlight ~100 px wide
    for i, side in enumerate((120, 200, 320)):
        canvas[50 + 330 * i : 50 + 330 * i + side, 100 : 100 + side] = drawn_face(side, rng)
    assert unconfirmed.detect(canvas), "YuNet alone should take something here for a face (why the check exists)"
    assert det.detect(canvas) == []


@pytest.mark.parametrize("model", ["yunet", "blazeface-full-range"])
def test_a_large_face_never_hides_a_small_one(
    model: str, yunet_analyser: FaceAnalyser, analyser: FaceAnalyser, faces_dir: Path
) -> None:
    """A big face (here a real one; in the field often a false one: a dog, a poster) and a 40 px face in one
    1080p frame: the small face is still searched for and found (no pass is skipped once a face is found)."""
    det = yunet_analyser.detector if model == "yunet" else analyser.detector
    big = load_image(faces_dir / OBAMA)
    small_photo = load_image(faces_dir / rows("faces.csv")[5]["path"])
    small_box = max(det.detect(small_photo), key=lambda d: d.area).box
    scene = np.full((1080, 1920, 3), 100, np.uint8)
    scale = 500 / big.shape[0]
    big = cv2.resize(big, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    scene[50 : 50 + big.shape[0], 50 : 50 + big.shape[1]] = big
    s = 40 / small_box[2]
    small = cv2.resize(small_photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    scene[700 : 700 + small.shape[0], 1400 : 1400 + small.shape[1]] = small
    centre = np.array([1400, 700]) + (small_box[:2] + small_box[2:] / 2) * s
    faces = det.detect(scene)
    assert any(f.width > 100 for f in faces)
    assert [f for f in faces if (np.abs(f.box[:2] + f.box[2:] / 2 - centre) < 20).all()], [f.box.round() for f in faces]


def test_small_faces_landmarks_come_from_a_closer_second_look(yunet_analyser: FaceAnalyser, faces_dir: Path) -> None:
    """40 px faces in a 1080p frame: the second look puts the 5 landmarks nearer to where YuNet puts them on
    the full-size photo than the first pass alone does (what the aligner, and so the embedding, depends on)."""
    det = yunet_analyser.detector
    assert isinstance(det, YuNetDetector) and det.refine_face_px is not None
    first_only = YuNetDetector(
        det.model, min_face_px=30.0, settings=yunet.YuNetSettings(refine_face_px=None), verifier=det.verifier
    )
    errors: dict[str, list[float]] = {"second look": [], "first pass": []}
    for r in rows("faces.csv")[::12]:
        photo = load_image(faces_dir / r["path"])
        ref = max(det.detect(photo), key=lambda d: d.area)
        s = 40 / ref.box[2]
        small = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)[:1000, :1800]
        scene = np.full((1080, 1920, 3), 100, np.uint8)
        scene[40 : 40 + small.shape[0], 60 : 60 + small.shape[1]] = small
        truth = ref.keypoints * s + (60, 40)
        for name, d in (("second look", det), ("first pass", first_only)):
            found = [f for f in d.detect(scene) if np.linalg.norm(f.keypoints[2] - truth[2]) < 10]
            assert found, (r["path"], name)
            errors[name].append(float(np.linalg.norm(found[0].keypoints - truth, axis=1).mean()))
    assert np.mean(errors["second look"]) < 0.8 * np.mean(errors["first pass"]), errors
