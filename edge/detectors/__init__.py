"""Face detector plugins: one module per model family, sharing ``base`` (interface, Reach, NMS).

The manifest entry's ``family`` names the plugin (BlazeFace when absent, as in older manifests),
so ``recognition.detector.model`` picks a model and the model picks its code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.detectors.base import Detector
from edge.errors import ModelError
from edge.runtime import LoadedModel

if TYPE_CHECKING:
    from edge.config import DetectorSettings

FAMILIES = ("blazeface", "yunet")


def family(model: LoadedModel) -> str:
    name = str(model.spec.extra.get("family", "blazeface"))
    if name not in FAMILIES:
        raise ModelError(f"detector {model.spec.name}: unknown family {name!r}; known: {list(FAMILIES)}")
    return name


def create_detector(model: LoadedModel, settings: DetectorSettings, load: Callable[[str], LoadedModel]) -> Detector:
    """The plugin for ``model``'s family, configured from ``[recognition.detector]``; ``load`` loads the
    other detector models a plugin uses (YuNet's verifier)."""
    from edge.detectors.blazeface import BlazeFaceDetector

    if family(model) == "yunet":
        from edge.detectors.yunet import YuNetDetector

        verify = settings.yunet.verify_with
        verifier = None
        if verify:
            checker = load(verify)
            if family(checker) != "blazeface":
                raise ModelError(f"detector {verify} cannot confirm faces: only a BlazeFace model can")
            verifier = BlazeFaceDetector(checker, close_face_retry=False)
        return YuNetDetector(
            model,
            score_threshold=settings.score_threshold,
            min_face_px=settings.min_face_px,
            close_face_retry=settings.close_face_retry,
            settings=settings.yunet,
            verifier=verifier,
        )
    return BlazeFaceDetector(
        model,
        score_threshold=settings.score_threshold,
        close_face_retry=settings.close_face_retry,
        min_face_px=settings.min_face_px,
    )
