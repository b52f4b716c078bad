"""``edge eval --details FILE``: one row per probe, so a technician can see why someone was missed.

For each probe: whether its face was found, its score against its own identity (genuine
probes), the threshold its face was held to, the top-1 enrolled identity and score, the
outcome, and for every miss or false match the reason in words.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.measure.evaluate import ImageResult
from edge.measure.protocol import Scores, read_manifest, split
from edge.threshold import ThresholdPolicy

COLUMNS = ("path", "identity", "role", "face_found", "own_score", "threshold", "top1", "top1_score", "outcome", "reason")


def _score(v: float) -> float | None:
    return round(v, 4) if math.isfinite(v) else None


def _no_face(r: ImageResult) -> str:
    return "no face found" if r.faces == 0 else "face found but not usable (quality gate)"


def probe_details(
    manifest: Path, enrol: int, scores: Scores, results: list[ImageResult], policy: ThresholdPolicy
) -> list[dict[str, Any]]:
    samples = read_manifest(manifest)
    sp = split(samples, enrol)
    rows = []
    for i, p in enumerate(sp.genuine + sp.unenrolled):
        genuine = i < len(sp.genuine)
        s, r = samples[p], results[p]
        top, top_score = scores.genuine_top[i] if genuine else scores.unenrolled_top[i - len(sp.genuine)]
        t = policy.for_face(r.quality)
        own = float(scores.genuine[i]) if genuine else -math.inf
        found = r.embedding is not None
        if genuine:
            if not found:
                outcome, reason = "miss", _no_face(r)
            elif not math.isfinite(own):
                outcome, reason = "miss", f"no usable face in the enrolment photo of {s.identity}"
            elif top != s.identity:
                outcome, reason = "miss", f"top-1 is {top} ({top_score:.3f}), above its own identity ({own:.3f})"
            elif own < t:
                outcome, reason = "miss", f"score {own:.3f} below the threshold {t:.3f}"
            else:
                outcome, reason = "hit", ""
        elif found and top is not None and top_score >= t:
            outcome, reason = "false match", f"not enrolled, but matches {top} at {top_score:.3f} (threshold {t:.3f})"
        else:
            outcome, reason = "correct reject", "" if found else _no_face(r)
        rows.append(
            {
                "path": str(s.path.relative_to(manifest.parent)) if s.path.is_relative_to(manifest.parent) else str(s.path),
                "identity": s.identity,
                "role": "genuine" if genuine else "impostor",
                "face_found": found,
                "own_score": _score(own) if genuine else None,
                "threshold": round(t, 4),
                "top1": top,
                "top1_score": _score(top_score),
                "outcome": outcome,
                "reason": reason,
            }
        )
    return rows


def write_details(path: Path, rows: list[dict[str, Any]]) -> None:
    """CSV, or JSON (a list of objects) when the file name ends in .json."""
    try:
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
            return
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for row in rows:
                w.writerow({k: "" if v is None else v for k, v in row.items()})
    except OSError as exc:
        raise EdgeError(f"--details {path}: cannot write ({exc.strerror or exc})") from exc
