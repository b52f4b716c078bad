"""Alignment, embedding and quality on real photos: the same person scores above different people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.align import ARCFACE_112, align_face, similarity_transform
from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.measure.evaluate import evaluate
from edge.quality import QualityGate, estimate_yaw
from edge.sources import load_image
from edge.threshold import ThresholdPolicy
from tests.conftest import rows


def test_similarity_transform_recovers_a_known_rotation_scale_and_shift() -> None:
    angle, scale, shift = np.radians(17.0), 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_112 @ rot.T + shift
    m = similarity_transform(ARCFACE_112, moved)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_aligned_crops_put_the_eyes_where_the_template_has_them(analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / "face_recognition/face_recognition__examples__obama_jpg.jpg")
    face = analyser.analyse(img)[0]
    assert face.crop.shape == (112, 112, 3)
    # Re-detecting on the aligned crop finds the eyes near the template's eye positions.
    again = analyser.detector.detect(np.pad(face.crop, ((56, 56), (56, 56), (0, 0))))[0]
    eyes = again.keypoints[:2] - 56
    np.testing.assert_allclose(eyes, ARCFACE_112[:2], atol=8)


def test_downscaling_large_faces_does_not_alias(analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / "face_recognition/face_recognition__examples__obama-1080p_jpg.jpg")
    d = analyser.detector.detect(img)[0]
    crop = align_face(img, d.keypoints)
    assert crop.shape == (112, 112, 3) and crop.std() > 10


def test_embeddings_are_unit_length(analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / "compreface/CompreFace__embedding-calculator__sample_images__000_5_jpg.jpg")
    faces = analyser.analyse(img, apply_gate=False)
    assert len(faces) == 5
    norms = np.linalg.norm(np.stack([f.embedding for f in faces]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_several_faces_embed_the_same_as_one_at_a_time(analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / "compreface/CompreFace__embedding-calculator__sample_images__011_3_jpg.jpg")
    faces = analyser.analyse(img, apply_gate=False)
    together = analyser.embedder.embed([f.crop for f in faces])
    alone = np.stack([analyser.embedder.embed([f.crop])[0] for f in faces])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_same_person_pairs_score_above_different_person_pairs(analyser: FaceAnalyser, faces_dir: Path) -> None:
    _, scores, _ = evaluate(analyser, faces_dir / "faces.csv")
    genuine, impostor = scores.genuine, scores.impostor
    assert genuine.mean() > impostor.mean() + 0.5
    # Area under the ROC curve: the chance a random same-person pair outscores a random different-person pair.
    auc = (genuine[:, None] > impostor[None, :]).mean()
    assert auc > 0.995


def test_the_flipped_crop_raises_or_keeps_same_person_scores(faces_dir: Path) -> None:
    results = {}
    for flip in (False, True):
        a = FaceAnalyser.from_settings(RecognitionSettings(flip=flip, accelerator="cpu"))
        _, scores, _ = evaluate(a, faces_dir / "faces.csv")
        g, i = scores.genuine, scores.impostor
        results[flip] = (g.mean(), (g.mean() - i.mean()) / np.sqrt((g.var() + i.var()) / 2))
    assert results[True][0] >= results[False][0]
    assert results[True][1] >= results[False][1]


def test_frontal_faces_have_small_yaw(analyser: FaceAnalyser, faces_dir: Path) -> None:
    yaws = [analyser.analyse(load_image(faces_dir / r["path"]), largest_only=True)[0].quality.yaw for r in rows("faces.csv")[:40]]
    assert np.median(np.abs(yaws)) < 20


def test_yaw_follows_the_nose() -> None:
    kp = np.array([[40, 50], [70, 50], [55, 65], [55, 80], [20, 55], [90, 55]], dtype=float)
    assert abs(estimate_yaw(kp)) < 1
    turned = kp.copy()
    turned[2, 0] = 80
    assert estimate_yaw(turned) > 30


def test_quality_travels_with_each_face_and_the_gate_says_why(analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / "face_recognition/face_recognition__examples__obama-240p_jpg.jpg")
    face = analyser.analyse(img, apply_gate=False)[0]
    q = face.quality.as_dict()
    assert set(q) == {"size_px", "sharpness", "yaw", "detector_score"}
    strict = QualityGate(min_size_px=500)
    assert strict.reasons(face.quality) == [f"face {face.quality.size_px:.0f}px < 500px"]
    gated = FaceAnalyser(analyser.detector, analyser.embedder, strict, analyser.threshold, analyser.manifest)
    result = gated.analyse(img)[0]
    assert not result.passed_gate and result.embedding.size == 0


def test_small_faces_are_held_to_a_higher_threshold(analyser: FaceAnalyser) -> None:
    from edge.quality import Quality

    policy = ThresholdPolicy.from_manifest(analyser.embedder.model.spec)  # type: ignore[attr-defined]
    big = Quality(size_px=120, sharpness=100, yaw=0, detector_score=0.9)
    small = Quality(size_px=20, sharpness=100, yaw=0, detector_score=0.9)
    assert policy.for_face(small) >= policy.for_face(big) == policy.base
    assert policy.for_face(big, entry_threshold=policy.base + 0.1) == pytest.approx(policy.base + 0.1)
