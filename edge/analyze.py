"""The recognition core composed: frame → detections → quality → aligned crops → embeddings.

One place that runs the stages in order, so the daemon, ``edge eval``, ``edge bench`` and
the watchlist builder all see exactly the same faces and embeddings.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.align import align_face
from edge.config import RecognitionSettings
from edge.detectors import ROLES, create_detector
from edge.detectors.base import Detection, Detector, Region
from edge.embed import Embedder, TFLiteEmbedder
from edge.models import ModelManifest, load_manifest
from edge.quality import Quality, QualityGate, measure
from edge.runtime import LoadedModel, load_model
from edge.sources import check_frame
from edge.threshold import ThresholdPolicy

log = logging.getLogger(__name__)


@dataclass
class AnalysedFace:
    detection: Detection
    quality: Quality
    crop: np.ndarray
    embedding: np.ndarray
    gate_reasons: list[str] = field(default_factory=list)
    # Found by the locating pass (no second look, no confirmation): good enough to follow a decided face,
    # not to embed (its landmarks may be a few pixels off on a small face).
    located: bool = False

    @property
    def passed_gate(self) -> bool:
        return not self.gate_reasons


class FaceAnalyser:
    def __init__(
        self,
        detector: Detector,
        embedder: Embedder,
        gate: QualityGate,
        threshold: ThresholdPolicy,
        manifest: ModelManifest,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.gate = gate
        self.threshold = threshold
        self.manifest = manifest
        self.threads = 1  # CPU threads per interpreter (what a reference pipeline beside it should get too)
        self.timings: dict[str, list[float]] = defaultdict(list)
        # The full-frame pass alone (keyframes; frames where only known faces moved): see edge.detectors.ROLES.
        self.still_detector: Detector = detector
        # For following known faces in small windows: one pass, no retry when a window is empty.
        self.follow_detector: Detector = detector
        # For following faces whose track is decided: where the face is, as cheaply as the plugin can tell.
        self.locate_detector: Detector = detector

    @classmethod
    def from_settings(cls, settings: RecognitionSettings) -> FaceAnalyser:
        manifest = load_manifest(settings.models_dir)

        loaded: dict[str, LoadedModel] = {}

        def load_detector(name: str) -> LoadedModel:
            # One interpreter set per model: each role's detector shares the main one's (and its verifier's).
            if name not in loaded:
                loaded[name] = load_model(
                    manifest, name, kind="detector", accelerator=settings.accelerator, threads=settings.model_threads()
                )
            return loaded[name]

        det_model = load_detector(settings.detector.model)
        detector, still, follow, locate = (
            create_detector(det_model, settings.detector, load_detector, role=role) for role in ROLES
        )
        emb_model = load_model(
            manifest, settings.embedder, kind="embedder", accelerator=settings.accelerator, threads=settings.model_threads()
        )
        embedder = TFLiteEmbedder(emb_model, flip=settings.flip)
        q = settings.quality
        gate = QualityGate(
            min_size_px=q.min_size_px,
            min_sharpness=q.min_sharpness,
            max_abs_yaw=q.max_abs_yaw,
            min_detector_score=q.min_detector_score,
        )
        policy = ThresholdPolicy.from_manifest(emb_model.spec, override=settings.threshold, max_fpir=settings.max_fpir)
        analyser = cls(detector, embedder, gate, policy, manifest)
        analyser.still_detector = still
        analyser.follow_detector = follow
        analyser.locate_detector = locate
        analyser.threads = settings.model_threads()
        return analyser

    def _timed(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage].append((now - start) * 1000.0)
        return now

    def analyse(
        self,
        image: np.ndarray,
        *,
        largest_only: bool = False,
        apply_gate: bool = True,
        regions: Sequence[Region] | None = None,
    ) -> list[AnalysedFace]:
        """Faces in ``image`` with quality and embedding; gated-out faces are not embedded when ``apply_gate``.

        ``regions`` ([x, y, w, h] frame pixels) limit the fine pass for small faces to parts of the frame.
        """
        image = check_frame(image)
        t = time.perf_counter()
        detections = self.detector.detect(image, regions)
        self._timed("detect", t)
        if largest_only and detections:
            detections = [max(detections, key=lambda d: d.area)]
        t = time.perf_counter()
        faces = self.prepare(image, detections, apply_gate=apply_gate)
        t = self._timed("align", t)
        wanted = [f for f in faces if f.passed_gate]
        if wanted:
            self.embed_faces(wanted)
            self._timed("embed", t)
        return faces

    def prepare(self, image: np.ndarray, detections: Sequence[Detection], *, apply_gate: bool = True) -> list[AnalysedFace]:
        """Aligned crop, quality and gate verdict of each detection; embeddings are left empty (see ``embed_faces``)."""
        faces: list[AnalysedFace] = []
        for det in detections:
            crop = align_face(image, det.keypoints, self.embedder.crop_size, self.embedder.alignment)
            q = measure(det, crop)
            reasons = self.gate.reasons(q) if apply_gate else []
            faces.append(AnalysedFace(det, q, crop, np.zeros(0, np.float32), reasons))
        return faces

    def embed_faces(self, faces: Sequence[AnalysedFace]) -> None:
        """Fill in the embeddings of ``faces`` in one batch (the tracker decides which faces need one)."""
        if not faces:
            return
        for f, e in zip(faces, self.embedder.embed([f.crop for f in faces]), strict=True):
            f.embedding = e
