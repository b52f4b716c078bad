"""``edge eval``: run the recognition core over a labelled manifest and report the protocol's figures."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.analyze import FaceAnalyser
from edge.distant_views import DistantViews, view_embeddings
from edge.errors import ImageDecodeError
from edge.measure.protocol import (
    Sample,
    Scores,
    collect_scores,
    open_set_rates,
    read_manifest,
    split,
    tar_at_far,
)
from edge.quality import Quality
from edge.sources import load_image

log = logging.getLogger(__name__)

FARS = ("0.01", "0.001")


@dataclass
class ImageResult:
    embedding: np.ndarray | None
    quality: Quality | None
    faces: int
    detect_ms: float
    embed_ms: float
    box: np.ndarray | None = None  # the face's box, kept for enrolment views


def analyse_images(analyser: FaceAnalyser, samples: list[Sample], *, quality_gate: bool) -> list[ImageResult]:
    """The largest face of each image (embedding and quality), or None where no usable face was found."""
    results = []
    for s in samples:
        try:
            image = load_image(s.path)
        except ImageDecodeError as exc:
            log.warning("%s", exc)
            results.append(ImageResult(None, None, 0, 0.0, 0.0))
            continue
        analyser.timings.clear()
        faces = analyser.analyse(image, largest_only=True, apply_gate=quality_gate)
        detect_ms = sum(analyser.timings.get("detect", []))
        embed_ms = sum(analyser.timings.get("align", [])) + sum(analyser.timings.get("embed", []))
        usable = [f for f in faces if f.passed_gate]
        if usable:
            results.append(
                ImageResult(usable[0].embedding, usable[0].quality, len(faces), detect_ms, embed_ms, usable[0].detection.box)
            )
        else:
            results.append(ImageResult(None, None, len(faces), detect_ms, embed_ms))
    return results


def count_nonface_detections(analyser: FaceAnalyser, samples: list[Sample]) -> int:
    total = 0
    for s in samples:
        try:
            image = load_image(s.path)
        except ImageDecodeError as exc:
            log.warning("%s", exc)
            continue
        total += len(analyser.detector.detect(image))
    return total


def evaluate(
    analyser: FaceAnalyser,
    manifest: Path,
    *,
    nonfaces: Path | None = None,
    enrol: int = 1,
    quality_gate: bool = False,
    views: DistantViews | None = None,
) -> tuple[dict[str, Any], Scores, list[ImageResult]]:
    started = time.perf_counter()
    samples = read_manifest(manifest)
    sp = split(samples, enrol)
    results = analyse_images(analyser, samples, quality_gate=quality_gate)
    embeddings = [r.embedding for r in results]
    extra: dict[int, list[np.ndarray]] = {}
    if views is not None:
        for i in (i for idx in sp.enrolled.values() for i in idx):
            box = results[i].box
            if box is not None:
                extra[i] = view_embeddings(analyser, load_image(samples[i].path), box, views, seed=i)
    scores = collect_scores(samples, embeddings, sp, extra)

    # As the device would match a watchlist of this many entries (a large one stricter).
    policy = analyser.threshold.for_entries(len(sp.enrolled))
    # Quality-aware: each probe is held to the threshold its own face quality calls for.
    t_gen = [policy.for_face(results[p].quality) for p in sp.genuine]
    t_unen = [policy.for_face(results[p].quality) for p in sp.unenrolled]
    rates = open_set_rates(scores, t_gen, t_unen)

    tar: dict[str, float] = {}
    thr_at: dict[str, float] = {}
    for far in FARS:
        tar[far], thr_at[far] = tar_at_far(scores, float(far))

    nonface_rate = None
    if nonfaces is not None:
        nf = read_manifest(nonfaces)
        nonface_rate = count_nonface_detections(analyser, nf) / len(nf) if nf else 0.0

    detected = [r for r in results if r.faces > 0]
    report: dict[str, Any] = {
        "detection_rate": len(detected) / len(samples) if samples else 0.0,
        "tar_at_far": tar,
        "rank1": rates["rank1"],
        "threshold": policy.base,
        "fnir": rates["fnir"],
        "fpir": rates["fpir"],
        "nonface_false_detections_per_image": nonface_rate,
        "ms_per_image": {
            "detect": statistics.fmean(r.detect_ms for r in detected) if detected else 0.0,
            "embed": statistics.fmean(r.embed_ms for r in detected) if detected else 0.0,
        },
        "counts": {
            "identities": len(sp.identities),
            "enrolled": len(sp.enrolled),
            "genuine_probes": len(sp.genuine),
            "impostor_probes": len(sp.unenrolled),
            "genuine_pairs": len(scores.genuine),
            "impostor_pairs": len(scores.impostor),
            "detection_failures": len(samples) - len(detected),
        },
        "threshold_at_far": {k: (v if np.isfinite(v) else None) for k, v in thr_at.items()},
        "embedder": analyser.embedder.name,
        "detector": analyser.detector.name,
        "enrol": enrol,
        "enrol_views": None if views is None else {"sizes": list(views.sizes), "jpeg_quality": views.jpeg_quality},
        "enrol_view_embeddings": sum(len(v) for v in extra.values()),
        "quality_gate": quality_gate,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return report, scores, results
