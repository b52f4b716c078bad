"""``edge calibrate``: choose an embedder's match threshold from impostor scores, in a way that generalises.

The development set is small, so the threshold is not put at the point where it shows
zero false positives. Instead every impostor comparison we can make is pooled: every
labelled face against every face of another identity, the same comparisons with the
probe degraded the ways field data is (grey, tiny, tightly cropped, blurred), and faces
from group photos of people not in the labelled set. The base threshold is the larger of

* the pooled scores' Gaussian tail at the target pair false-accept rate, and
* the pooled scores' empirical quantile at that rate,

so a heavy tail cannot hide behind the Gaussian fit. Small faces, whose impostor scores
spread higher, get their own raises computed the same way, one size band at a time: distant
faces (each face placed at 36 and 52 px in a full-HD scene and found there by the detector's
fine pass, as a pole camera sees passers-by; once clean and once as a modest camera records it:
noise, slight blur, low contrast, JPEG 70-95, see ``camera_scenes.camera``) stand for faces under
64 px (the 52 px probes) and under 44 px (the 36 px probes), and faces shrunk to 24 px for under
32 px. Rules add up, so each band's threshold is its own probes' tail (never below the wider band's).
Each labelled face stands on the gallery side as enrolment stores it: with the configured distant views
(``recognition.enrol_views``, ``edge.distant_views``) besides its own embedding, a pair scoring the max.

The reserved data holds people the development set does not, so the result is checked on people
it was not computed from: the identities are split in two halves, every threshold is computed from
the impostor pairs whose probe belongs to one half and counted on the other half's, both ways
(``details.holdout``).

A passer-by is compared with every entry, so a large watchlist needs a lower pair rate to keep the
same false positive identification rate (about entries × pair FAR). The same rule is therefore also
evaluated at each of ``STRICTER_FARS`` below the target (``stricter``); the device matches a watchlist
too large for the shipped threshold at the first row that holds ``recognition.max_fpir``
(``edge.threshold``). Rows below about one pair in the pool rest on the Gaussian tail alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
from typing import Any, Protocol

import cv2
import numpy as np

from edge.analyze import FaceAnalyser
from edge.distant_views import DistantViews, view_embeddings
from edge.measure.camera_scenes import camera
from edge.measure.protocol import read_manifest
from edge.measure.scenes import place_face
from edge.sources import load_image

log = logging.getLogger(__name__)

SMALL_FACE_PX = 32.0
DISTANT_FACE_PX = 64.0
FAR_FACE_PX = 44.0  # between the two distant probe sizes: faces under it are held to the 36 px probes' tail
DISTANT_SIZES = (36, 52)
# size band (faces under this many px) -> the probe kinds whose impostor tail sets its threshold, narrowest last
BANDS: dict[float, list[str]] = {
    DISTANT_FACE_PX: ["distant52", "camera52"],
    FAR_FACE_PX: ["distant36", "camera36"],
    SMALL_FACE_PX: ["tiny24"],
}
# Pair FARs the stricter rows are computed at: at max_fpir 1%, 1e-8 keeps 1M entries within it.
STRICTER_FARS = (5e-5, 2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 5e-7, 2e-7, 1e-7, 5e-8, 2e-8, 1e-8)


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


class BandThresholds(Protocol):
    """The base and each size band's full threshold at a pair rate, from the pairs among ``people`` (None: all)."""

    def __call__(self, people: set[str] | None = None, far: float = ...) -> tuple[float, dict[float, float]]: ...


@dataclass
class CalibrationResult:
    base: float
    raises: dict[float, float]  # faces under this many px -> raise added (rules add up)
    target_far: float
    stricter: list[tuple[float, float, dict[float, float]]]  # (pair FAR, base, raises), by falling FAR
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


def calibrate(
    analyser: FaceAnalyser,
    faces: Path,
    impostor_photos: list[Path],
    target_far: float = 1e-4,
    views: DistantViews | None = None,
) -> CalibrationResult:
    """``views``: each labelled face is also enrolled as ``views`` sees it, and a comparison scores the max."""
    samples = read_manifest(faces)
    ids = np.array([s.identity for s in samples])
    refs: list[np.ndarray | None] = []
    ref_views: list[list[np.ndarray]] = []
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
        ref_views.append([] if views is None else view_embeddings(analyser, image, box, views, seed=i))
        scenes = {f"distant{px}": distant_scene(image, box, px, i) for px in DISTANT_SIZES}
        scenes |= {f"camera{px}": distant_scene(image, box, px, i, recorded=True) for px in DISTANT_SIZES}
        for kind, img in {**degrade(image, box), **scenes}.items():
            degraded = analyser.analyse(img, largest_only=True, apply_gate=False)
            if degraded:
                probes.setdefault(kind, []).append((i, degraded[0].embedding))
    valid = [i for i, r in enumerate(refs) if r is not None]
    gallery = [[r, *v] for r, v in zip((r for r in refs if r is not None), ref_views, strict=True)]
    ref_mat = np.stack([e for g in gallery for e in g])
    starts = np.cumsum([0] + [len(g) for g in gallery[:-1]])
    ref_ids = ids[valid]

    def against_refs(e: np.ndarray) -> np.ndarray:
        """``e`` against each labelled face: the max over that face's gallery embeddings."""
        return np.maximum.reduceat(ref_mat @ e, starts)

    pooled: list[np.ndarray] = []
    per_kind: dict[str, Any] = {}
    for kind, items in probes.items():
        scores = np.concatenate([against_refs(e)[ref_ids != ids[i]] for i, e in items])
        pooled.append(scores)
        per_kind[kind] = {"pairs": int(scores.size), "max": round(float(scores.max()), 4)}
    cohort = 0
    for manifest in impostor_photos:
        for s in read_manifest(manifest):
            for face in analyser.analyse(load_image(s.path), apply_gate=False):
                pooled.append(against_refs(face.embedding))
                cohort += 1
    per_kind["group_photo_faces"] = {"faces": cohort}
    allp = np.concatenate(pooled)
    base, gauss, emp = tail_threshold(allp, target_far)

    def kind_scores(kinds: list[str], people: set[str] | None = None) -> np.ndarray:
        """Impostor scores of these probe kinds; with ``people``, only pairs whose both sides are among them."""
        among = np.ones(len(ref_ids), bool) if people is None else np.isin(ref_ids, sorted(people))
        items = [(i, e) for k in kinds for i, e in probes.get(k, []) if people is None or ids[i] in people]
        return np.concatenate([against_refs(e)[(ref_ids != ids[i]) & among] for i, e in items] or [np.zeros(1)])

    def band_thresholds(people: set[str] | None = None, far: float = target_far) -> tuple[float, dict[float, float]]:
        """The base and each band's full threshold (not yet a raise) at ``far``, from the pairs among ``people``."""
        b = tail_threshold(allp if people is None else kind_scores(list(probes), people), far)[0]
        out: dict[float, float] = {}
        floor = b
        for below, kinds in BANDS.items():
            floor = max(floor, tail_threshold(kind_scores(kinds, people), far)[0])
            out[below] = floor
        return b, out

    def rule_at(far: float) -> tuple[float, dict[float, float]]:
        """(base, raise per band) at pair rate ``far``; the raises add up to each band's own threshold."""
        b, full = band_thresholds(None, far)
        raises: dict[float, float] = {}
        level = round(b, 3)
        for below, t in full.items():
            raises[below] = round(max(0.0, t - level), 3)
            level += raises[below]
        return round(b, 3), raises

    _, raises = rule_at(target_far)
    stricter: list[tuple[float, float, dict[float, float]]] = []
    for far in (f for f in STRICTER_FARS if f < target_far):
        b, r = rule_at(far)
        if b + sum(r.values()) >= 1.0:  # a cosine never reaches it: the list could not match at all
            break
        stricter.append((far, b, r))
    small_pairs = int(kind_scores(BANDS[SMALL_FACE_PX]).size)
    return CalibrationResult(
        base=round(base, 3),
        raises=raises,
        target_far=target_far,
        stricter=stricter,
        pairs=int(allp.size),
        small_pairs=small_pairs,
        mean=float(allp.mean()),
        std=float(allp.std()),
        # The detector's landmarks shape the aligned crops, so the threshold is tied to it too.
        details={
            "detector": analyser.detector.name,
            # The gallery side of every pair: the labelled faces, and their distant views when enrolment adds them.
            "enrol_views": None if views is None else {"sizes": list(views.sizes), "jpeg_quality": views.jpeg_quality},
            "gaussian": round(gauss, 4),
            "empirical": round(emp, 4),
            "probes": per_kind,
            "holdout": holdout(ids, probes, kind_scores, band_thresholds),
        },
    )


def holdout(
    ids: np.ndarray,
    probes: dict[str, list[tuple[int, np.ndarray]]],
    kind_scores: Callable[[list[str], set[str] | None], np.ndarray],
    band_thresholds: BandThresholds,
) -> list[dict[str, Any]]:
    """Thresholds computed from the impostor pairs among half of the identities, counted on the other half's.

    The halves alternate over the sorted identities; each side is calibrated in turn and the pairs
    among the other side's people at or above each of its thresholds are counted: unseen people
    exceeding the target rate by much would show that the rule fits the people it was computed from.
    """
    names = sorted(set(ids.tolist()))
    halves = [set(names[0::2]), set(names[1::2])]
    out = []
    for fit_on, check_on in (halves, halves[::-1]):
        b, bands = band_thresholds(fit_on)
        row: dict[str, Any] = {"fitted_on": len(fit_on), "checked_on": len(check_on)}
        for label, t, kinds in [("base", b, list(probes)), *((f"under_{k:g}px", v, BANDS[k]) for k, v in bands.items())]:
            scores = kind_scores(kinds, check_on)
            row[label] = {"threshold": round(t, 4), "held_out_pairs": int(scores.size), "at_or_above": int((scores >= t).sum())}
        out.append(row)
    return out


def write_threshold(manifest_path: Path, embedder: str, result: CalibrationResult, data: str) -> None:
    """Store the calibrated threshold with the embedder's entry in models/manifest.json."""
    raw = json.loads(manifest_path.read_text(encoding="utf-8"))

    def rules(raises: dict[float, float]) -> list[dict[str, Any]]:
        return [{"metric": "size_px", "below": below, "raise_by": r} for below, r in raises.items() if r > 0]

    raw["models"][embedder]["threshold"] = {
        "base": result.base,
        "quality_rules": rules(result.raises),
        # For watchlists too large for the base to hold recognition.max_fpir (edge.threshold).
        "stricter": [{"pair_far": far, "base": b, "quality_rules": rules(r)} for far, b, r in result.stricter],
        "calibration": {
            "rule": "max(upper-tail gaussian (median, 99th percentile), empirical quantile) of pooled impostor "
            "scores at the target pair FAR; each size band's rule from its own distant probes' impostor scores",
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
