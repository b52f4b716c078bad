"""Face detector plugins: one module per model family, sharing ``base`` (interface, Reach, NMS).

The manifest entry's ``family`` names the plugin (BlazeFace when absent, as in older manifests),
so ``recognition.detector.model`` picks a model and the model picks its code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from edge.detectors.base import Detector
from edge.errors import ModelError
from edge.runtime import LoadedModel

if TYPE_CHECKING:
    from edge.config import DetectorSettings

FAMILIES = ("blazeface", "yunet")
Role = Literal["main", "still", "follow", "locate"]
# main: every pass the settings ask for; still: the full-frame pass alone, no fine pass and no close-face retry
# (keyframes, and frames where every change is a known face's: a face coming close is a change no known face
# explains, which gets the main detector); follow: one pass over a small window around a known face, no retry
# when it is empty; locate: where a decided face is now, as cheaply as the plugin can tell (its faces are
# followed, never embedded).
ROLES: tuple[Role, ...] = ("main", "still", "follow", "locate")
# A followed face's window is four face widths: at this YuNet input the face is ~40 px, well inside what
# it finds (16 px) and what its second look refines; a quarter of the 320 px full-frame input's work.
YUNET_WINDOW_PX = 160


def family(model: LoadedModel) -> str:
    name = str(model.spec.extra.get("family", "blazeface"))
    if name not in FAMILIES:
        raise ModelError(f"detector {model.spec.name}: unknown family {name!r}; known: {list(FAMILIES)}")
    return name


def create_detector(
    model: LoadedModel, settings: DetectorSettings, load: Callable[[str], LoadedModel], *, role: Role = "main"
) -> Detector:
    """The plugin for ``model``'s family, configured from ``[recognition.detector]`` for ``role`` (``ROLES``);
    ``load`` loads the other detector models a plugin uses (YuNet's verifier)."""
    from edge.detectors.blazeface import BlazeFaceDetector

    if role != "main":
        settings = settings.model_copy(update={"min_face_px": None, "close_face_retry": False})
    if family(model) == "yunet":
        from edge.detectors.yunet import YuNetDetector

        yunet = settings.yunet
        if role in ("follow", "locate"):
            yunet = yunet.model_copy(update={"full_frame_px": YUNET_WINDOW_PX})
        if role == "locate":
            yunet = yunet.model_copy(update={"refine_face_px": None, "verify_with": None})
        settings = settings.model_copy(update={"yunet": yunet})
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
