"""The TFLite dlib ResNet against dlib itself: same descriptors on dlib's chips, same chip geometry from BlazeFace.

Runs where the build-time packages are installed (``pip install -e .[build-models]``):
dlib (``dlib-bin``) and ``face_recognition_models`` 0.3.0. Elsewhere (the CI install) it
is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edge.align import alignment_points, similarity_transform, template
from edge.analyze import FaceAnalyser
from edge.config import RecognitionSettings
from edge.embed import TFLiteEmbedder, l2_normalise
from edge.models import load_manifest
from edge.runtime import load_model
from tools.dlib_resnet.reference import DlibReference, ReferenceFace

pytest.importorskip("dlib", reason="dlib is not installed (pip install dlib-bin, part of the build-models extra)")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face_recognition_models 0.3.0 is not installed (build-models extra)", allow_module_level=True)

FACES_USED = 8


@pytest.fixture(scope="module")
def reference(faces_dir: Path) -> list[ReferenceFace]:
    return DlibReference().faces(faces_dir / "faces.csv", limit=FACES_USED)


def embed_chips(name: str, chips: list[np.ndarray]) -> np.ndarray:
    embedder = TFLiteEmbedder(load_model(load_manifest(), name, kind="embedder", accelerator="cpu"), flip=False)
    return embedder.embed(chips)


def test_the_float_model_gives_dlibs_descriptors_on_dlibs_chips(reference: list[ReferenceFace]) -> None:
    ours = embed_chips("dlib-resnet", [f.chip for f in reference])
    dlib_desc = l2_normalise(np.stack([f.descriptor for f in reference]))
    cosine = (ours * dlib_desc).sum(axis=1)
    assert len(reference) >= 6
    assert cosine.min() >= 0.999, f"min {cosine.min():.6f}, mean {cosine.mean():.6f}"


def test_the_int8_model_stays_close_to_dlib(reference: list[ReferenceFace]) -> None:
    ours = embed_chips("dlib-resnet-int8", [f.chip for f in reference])
    dlib_desc = l2_normalise(np.stack([f.descriptor for f in reference]))
    assert (ours * dlib_desc).sum(axis=1).min() >= 0.98


def test_blazeface_alignment_reproduces_dlibs_chip_geometry(reference: list[ReferenceFace]) -> None:
    settings = RecognitionSettings(embedder="dlib-resnet", accelerator="cpu", detector={"model": "blazeface-full-range"})  # type: ignore[arg-type]
    detector = FaceAnalyser.from_settings(settings).detector
    errors = []
    for face in reference:
        det = max(detector.detect(face.image), key=lambda d: d.area)
        ours = similarity_transform(alignment_points(det.keypoints), template("dlib-chip-150", 150))
        # dlib's own landmarks, carried into our crop and into dlib's chip, land in nearly the same place.
        in_ours = face.landmarks @ ours[:, :2].T + ours[:, 2]
        in_dlib = face.landmarks @ face.to_chip[:, :2].T + face.to_chip[:, 2]
        errors.append(np.linalg.norm(in_ours - in_dlib, axis=1).mean())
    # Turned faces differ more (BlazeFace's nose tip and dlib's nose base move differently with yaw).
    assert np.median(errors) < 4.0 and np.mean(np.array(errors) < 5.0) >= 0.8, errors
