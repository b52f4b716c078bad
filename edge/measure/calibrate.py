"""``edge calibrate``: choose an embedder's match threshold from impostor scores, in a way that generalises.

The development set is small, so the threshold is not put at the point where it shows
zero false positives. Instead every impostor comparison we can make is pooled: every
labelled face against every face of another identity, the same comparisons with the
probe degraded the ways field data is (grey, tiny, tightly cropped, blurred), and faces
from group photos of people not in the labelled set. The base threshold is the larger of

* the pooled scores' Gaussian tail at the target pair false-accept rate, and
* the pooled scores' empirical quantile at that rate,

so a heavy tail cannot hide behind the Gaussian fit. Small faces, whose impostor scores
spread higher, get their own raises computed the same way: distant faces (each face placed
at 36 and 52 px in a full-HD scene and found there by the detector's fine pass, as a pole
camera sees passers-by; once clean and once as a modest camera records it: noise, slight blur,
low contrast, JPEG 70-95, see ``camera_scenes.camera``) for faces under 64 px, and faces shrunk
to 24 px for under 32 px.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.measure.camera_scenes import camera
from edge.measure.protocol import read_manifest
from edge.measure.scenes import place_face
from edge.sources import load_image

log = logging.getLogger(__name__)

SMALL_FACE_PX = 32.0
DISTANT_FACE_PX = 64.0
DISTANT_SIZES = (36, 52)


def distant_scene(image: np.ndarray, box: np.ndarray, face_px: float, seed: int, *, recorded: bool = False) -> np.ndarray:
    """``image``'s face placed ``face_px`` wide in a plain, slightly noisy 1920x1080 scene; ``recorded``: then
    degraded and JPEG-encoded as a camera would."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(90, 130, size=(1080, 1920, 3), dtype=np.uint8)
    place_face(scene, image, box, face_px, rng)
    if not recorded:
        return scene
    scene, quality = camera(scene, rng)
    ok, jpeg = cv2.imencode(".jpg", scene, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) if ok else scene


def degrade(image: np.ndarray, box: np.ndarray) -> dict[str, np.ndarray]:
    """Copies of ``image`` as field conditions make them: grey, tiny (24 and 40 px faces), tight crop, blurred."""
    x, y, w, h = (float(v) for v in box)
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    out = {"grey": grey}
    for px in (24, 40):
        s = px / max(w, 1.0)
        if s < 1:
            out[f"tiny{px}"] = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    crop = image[int(y) : int(y + h), int(x) : int(x + w)]
    if crop.shape[0] >= 16 and crop.shape[1] >= 16:
        out["tight"] = crop
    out["blur"] = cv2.GaussianBlur(image, (0, 0), max(1.0, w / 60.0))
    return out


@dataclass
class CalibrationResult:
    base: float
    small_face_raise: float
    distant_face_raise: float
    target_far: float
    pairs: int
    small_pairs: int
    mean: float
    std: float
    details: dict[str, Any]


def tail_threshold(scores: np.ndarray, far: float) -> tuple[float, float, float]:
    """(threshold, gaussian, empirical) for a pair false-accept rate ``far``.

    The Gaussian is fitted to the upper tail that matters (median and 99th percentile), not
    to the whole pool: degraded probes stretch the lower side of some embedders' impostor
    scores (dlib's sit near 0.83 with a long tail downwards), and a whole-pool spread would
    then put the threshold far above every impostor ever seen.
    """
    median, q99 = (float(v) for v in np.quantile(scores, [0.5, 0.99]))
    z = NormalDist().inv_cdf
    sd = (q99 - median) / z(0.99)
    gauss = median + z(1.0 - far) * sd
    emp = float(np.quantile(scores, 1.0 - far))
    return max(gauss, emp), gauss, emp


def calibrate(analyser: FaceAnalyser, faces: Path, impostor_photos: list[Path], target_far: float = 1e-4) -> CalibrationResult:
    samples = read_manifest(faces)
    ids = np.array([s.identity for s in samples])
    refs: list[np.ndarray | None] = []
    probes: dict[str, list[tuple[int, np.ndarray]]] = {}
    for i, s in enumerate(samples):
        image = load_image(s.path)
        found = analyser.analyse(image, largest_only=True, apply_gate=False)
        if not found:
            refs.append(None)
            continue
        refs.append(found[0].embedding)
        probes.setdefault("original", []).append((i, found[0].embedding))
        box = found[0].detection.box
        scenes = {f"distant{px}": distant_scene(image, box, px, i) for px in DISTANT_SIZES}
        scenes |= {f"camera{px}": distant_scene(image, box, px, i, recorded=True) for px in DISTANT_SIZES}
        for kind, img in {**degrade(image, box), **scenes}.items():
            degraded = analyser.analyse(img, largest_only=True, apply_gate=False)
            if degraded:
                probes.setdefault(kind, []).append((i, degraded[0].embedding))
    valid = [i for i, r in enumerate(refs) if r is not None]
    ref_mat = np.stack([r for r in refs if r is not None])
    ref_ids = ids[valid]
    pooled: list[np.ndarray] = []
    per_kind: dict[str, Any] = {}
    for kind, items in probes.items():
        scores = np.concatenate([(ref_mat @ e)[ref_ids != ids[i]] for i, e in items])
        pooled.append(scores)
        per_kind[kind] = {"pairs": int(scores.size), "max": round(float(scores.max()), 4)}
    cohort = 0
    for manifest in impostor_photos:
        for s in read_manifest(manifest):
            for face in analyser.analyse(load_image(s.path), apply_gate=False):
                pooled.append(ref_mat @ face.embedding)
                cohort += 1
    per_kind["group_photo_faces"] = {"faces": cohort}
    allp = np.concatenate(pooled)
    base, gauss, emp = tail_threshold(allp, target_far)

    def kinds_threshold(kinds: list[str]) -> tuple[float, int]:
        items = [(i, e) for k in kinds for i, e in probes.get(k, [])]
        scores = np.concatenate([(ref_mat @ e)[ref_ids != ids[i]] for i, e in items] or [np.zeros(1)])
        return tail_threshold(scores, target_far)[0], int(scores.size)

    distant_t, _ = kinds_threshold([f"{kind}{px}" for kind in ("distant", "camera") for px in DISTANT_SIZES])
    small_t, small_pairs = kinds_threshold(["tiny24"])
    distant_raise = round(max(0.0, distant_t - base), 3)
    return CalibrationResult(
        base=round(base, 3),
        # Rules add up: a face under 32 px gets both raises, which together reach the tiny faces' own tail.
        small_face_raise=round(max(0.0, small_t - base - distant_raise), 3),
        distant_face_raise=distant_raise,
        target_far=target_far,
        pairs=int(allp.size),
        small_pairs=small_pairs,
        mean=float(allp.mean()),
        std=float(allp.std()),
        # The detector's landmarks shape the aligned crops, so the threshold is tied to it too.
        details={"detector": analyser.detector.name, "gaussian": round(gauss, 4), "empirical": round(emp, 4), "probes": per_kind},
    )


def write_threshold(manifest_path: Path, embedder: str, result: CalibrationResult, data: str) -> None:
    """Store the calibrated threshold with the embedder's entry in models/manifest.json."""
    raw = json.loads(manifest_path.read_text(encoding="utf-8"))
    rules = []
    if result.distant_face_raise > 0:
        rules.append({"metric": "size_px", "below": DISTANT_FACE_PX, "raise_by": result.distant_face_raise})
    if result.small_face_raise > 0:
        rules.append({"metric": "size_px", "below": SMALL_FACE_PX, "raise_by": result.small_face_raise})
    raw["models"][embedder]["threshold"] = {
        "base": result.base,
        "quality_rules": rules,
        "calibration": {
            "rule": "max(upper-tail gaussian (median, 99th percentile), empirical quantile) of pooled impostor "
            "scores at the target pair FAR",
            "target_pair_far": result.target_far,
            "impostor_pairs": result.pairs,
            "resolution": f"one pair is {1.0 / result.pairs:.1e} of the pool",
            "mean": round(result.mean, 4),
            "std": round(result.std, 4),
            "data": data,
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            **result.details,
        },
    }
    manifest_path.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
