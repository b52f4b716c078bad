"""dlib's ResNet as a selectable embedder: its own alignment, same-person ranking, variants in one space."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.align import DLIB_CHIP_150, alignment_points
from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.models import load_manifest
from edge.sources import load_image
from edge.watchlist.bundle import Bundle, build_unsigned, sign_manifest, verify_bundle
from edge.watchlist.chunks import Entry
from edge.watchlist.errors import EmbeddingSpaceError
from edge.watchlist.keys import key_id
from tests.conftest import ROOT, rows

DLIB_VARIANTS = ("dlib-resnet", "dlib-resnet-int8")


@pytest.fixture(scope="module")
def dlib_analyser() -> FaceAnalyser:
    return FaceAnalyser.from_settings(RecognitionSettings(embedder="dlib-resnet", accelerator="cpu"))


def test_the_dlib_aligner_puts_the_keypoints_where_the_template_says(dlib_analyser: FaceAnalyser, faces_dir: Path) -> None:
    img = load_image(faces_dir / "face_recognition/face_recognition__examples__obama_jpg.jpg")
    face = dlib_analyser.analyse(img)[0]
    assert face.crop.shape == (150, 150, 3)
    # Re-detecting on the aligned crop finds eyes, nose tip and mouth centre near the template's points.
    pad = 75
    again = dlib_analyser.detector.detect(np.pad(face.crop, ((pad, pad), (pad, pad), (0, 0))))[0]
    np.testing.assert_allclose(alignment_points(again.keypoints) - pad, DLIB_CHIP_150, atol=8)


def test_same_person_pairs_score_above_different_person_pairs(dlib_analyser: FaceAnalyser, faces_dir: Path) -> None:
    embeddings, people = [], []
    for row in rows("faces.csv")[:30]:
        found = dlib_analyser.analyse(load_image(faces_dir / row["path"]), largest_only=True, apply_gate=False)
        if found:
            embeddings.append(found[0].embedding)
            people.append(row["identity"])
    scores = np.stack(embeddings) @ np.stack(embeddings).T
    same = np.array(people)[:, None] == np.array(people)[None, :]
    upper = np.triu(np.ones_like(same), k=1).astype(bool)
    genuine, impostor = scores[same & upper], scores[~same & upper]
    assert len(genuine) > 20 and len(impostor) > 300
    # dlib's descriptors are not centred: different people still score ~0.85 in cosine, so the gap is small
    # in absolute terms; the ranking (AUC) is what says the embedder separates people.
    assert genuine.mean() > impostor.mean() + 0.08
    auc = (genuine[:, None] > impostor[None, :]).mean()
    assert auc > 0.995


def test_the_int8_variant_embeds_like_the_float_one(dlib_analyser: FaceAnalyser, faces_dir: Path) -> None:
    int8 = FaceAnalyser.from_settings(RecognitionSettings(embedder="dlib-resnet-int8", accelerator="cpu"))
    img = load_image(faces_dir / "compreface/CompreFace__embedding-calculator__sample_images__000_5_jpg.jpg")
    faces = dlib_analyser.analyse(img, apply_gate=False)
    crops = [f.crop for f in faces]
    cosine = (dlib_analyser.embedder.embed(crops) * int8.embedder.embed(crops)).sum(axis=1)
    assert len(crops) == 5 and cosine.min() > 0.98
    assert int8.embedder.embedding_space == dlib_analyser.embedder.embedding_space


def test_every_dlib_variant_declares_the_float_reference_space_licence_and_threshold() -> None:
    manifest = load_manifest()
    reference = manifest.raw["references"]["dlib-resnet-float32"]
    for name in DLIB_VARIANTS:
        spec = manifest.get(name, "embedder")
        assert spec.extra["embedding_space"] == reference["sha256"]
        assert spec.extra["dimension"] == 128 and spec.extra["input"]["alignment"] == "dlib-chip-150"
        assert spec.extra["licence"].startswith("CC0") and spec.extra["source"]["package"] == "face_recognition_models"
        assert spec.variant_of in ("dlib-resnet-float32", "dlib-resnet")
        assert 0.5 < spec.extra["threshold"]["base"] < 1.0


def test_the_dlib_build_check_verifies_hashes_without_torch_or_dlib() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools/build_dlib_resnet.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok       dlib-resnet: " in out.stdout and "ok       dlib-resnet-int8: " in out.stdout


def test_a_mobilefacenet_bundle_is_refused_by_a_dlib_device(dlib_analyser: FaceAnalyser) -> None:
    key = Ed25519PrivateKey.generate()
    mobilefacenet_space = load_manifest().get("mobilefacenet", "embedder").extra["embedding_space"]
    vector = np.full((1, 192), 192**-0.5, dtype=np.float32)
    manifest, chunks = build_unsigned(
        [Entry(entry_id="case-1", embeddings=vector)],
        name="city",
        version=1,
        embedding_space=mobilefacenet_space,
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )
    data, sig = sign_manifest(manifest, key)
    bundle = Bundle(data, sig, dict(enumerate(chunks)))
    keys = {key_id(key.public_key()): key.public_key()}
    with pytest.raises(EmbeddingSpaceError):
        verify_bundle(bundle, keys, embedding_space=dlib_analyser.embedder.embedding_space, current_version=None)  # type: ignore[arg-type]
