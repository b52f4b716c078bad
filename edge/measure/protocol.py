"""The evaluation protocol of ``edge eval``, as pure functions over labels and scores.

Kept free of models and images so each rule of the protocol (split, thresholds, rates)
can be tested on its own. See "Evaluation protocol" in the design notes; denominators are
fixed by the split, not by what was detected (ISO/IEC 19795-1 generalised rates).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ManifestError
from edge.untrusted import read_csv

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Sample:
    path: Path
    identity: str


def read_manifest(path: Path | str) -> list[Sample]:
    """Rows of a ``path,identity`` CSV, with paths resolved against the CSV's folder."""
    path = Path(path)
    reader = read_csv(path, {"path", "identity"}, "a header with columns 'path' and 'identity'", ManifestError)
    samples = []
    for line, row in enumerate(reader, start=2):
        rel, ident = (row.get("path") or "").strip(), (row.get("identity") or "").strip()
        if not rel or not ident:
            raise ManifestError(f"{path}:{line}: empty path or identity")
        samples.append(Sample(path=(path.parent / rel), identity=ident))
    return samples


@dataclass(frozen=True)
class Split:
    enrolled: dict[str, list[int]]  # identity -> sample indices of its templates
    genuine: list[int]  # probe sample indices whose identity is enrolled
    unenrolled: list[int]  # probe sample indices whose identity is not enrolled
    identities: list[str]


def split(samples: list[Sample], enrol: int = 1) -> Split:
    """Every 4th identity (sorted(), indices 3, 7, ...) is not enrolled; others enrol their first ``enrol`` images."""
    if enrol < 1:
        raise ValueError("enrol must be at least 1")
    by_id: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        by_id.setdefault(s.identity, []).append(i)
    identities = sorted(by_id)
    enrolled: dict[str, list[int]] = {}
    genuine: list[int] = []
    unenrolled: list[int] = []
    for rank, ident in enumerate(identities):
        idx = sorted(by_id[ident], key=lambda i: str(samples[i].path))
        if rank % 4 == 3 or len(idx) < 2:
            unenrolled.extend(idx)
            continue
        enrolled[ident] = idx[:enrol]
        genuine.extend(idx[enrol:])
    return Split(enrolled=enrolled, genuine=sorted(genuine), unenrolled=sorted(unenrolled), identities=identities)


def score_matrix(
    embeddings: list[np.ndarray | None],
    sp: Split,
    probes: list[int],
    extra: Mapping[int, list[np.ndarray]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """(len(probes), len(enrolled)) max-over-templates cosine; minus infinity where a face is missing.

    ``extra``: further gallery embeddings of an enrolled sample (by sample index), scored like its own.
    """
    names = sorted(sp.enrolled)
    out = np.full((len(probes), len(names)), NEG_INF, dtype=np.float64)
    extra = extra or {}
    for j, name in enumerate(names):
        templates = [e for e in (embeddings[i] for i in sp.enrolled[name]) if e is not None]
        templates += [e for i in sp.enrolled[name] if embeddings[i] is not None for e in extra.get(i, [])]
        if not templates:
            continue
        tmat = np.stack(templates).astype(np.float64)
        for r, p in enumerate(probes):
            e = embeddings[p]
            if e is not None:
                out[r, j] = float(np.max(tmat @ e.astype(np.float64)))
    return out, names


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Lowest t with at most floor(far × N) impostor scores ≥ t."""
    n = len(impostor)
    allowed = math.floor(far * n + 1e-9)
    if allowed >= n:
        return NEG_INF
    ordered = np.sort(np.asarray(impostor, dtype=np.float64))[::-1]
    return float(np.nextafter(ordered[allowed], np.inf))


@dataclass(frozen=True)
class Scores:
    """Verification and identification scores of one evaluation run."""

    genuine: np.ndarray  # one per genuine probe
    impostor: np.ndarray  # one per (probe, other enrolled identity) pair
    genuine_top: list[tuple[str | None, float]]  # top-1 (identity, score) per genuine probe, with truth below
    genuine_truth: list[str]
    unenrolled_top: list[tuple[str | None, float]]


def collect_scores(
    samples: list[Sample],
    embeddings: list[np.ndarray | None],
    sp: Split,
    extra: Mapping[int, list[np.ndarray]] | None = None,
) -> Scores:
    probes = sp.genuine + sp.unenrolled
    matrix, names = score_matrix(embeddings, sp, probes, extra)
    genuine: list[float] = []
    impostor: list[float] = []
    tops: list[tuple[str | None, float]] = []
    truth: list[str] = []
    for r, p in enumerate(probes):
        row = matrix[r]
        own = samples[p].identity if r < len(sp.genuine) else None
        for j, name in enumerate(names):
            if name == own:
                genuine.append(row[j])
            else:
                impostor.append(row[j])
        if names and np.isfinite(row).any():
            j = int(np.argmax(row))
            tops.append((names[j], float(row[j])))
        else:
            tops.append((None, NEG_INF))
        if own is not None:
            truth.append(own)
    ng = len(sp.genuine)
    return Scores(
        genuine=np.array(genuine, dtype=np.float64),
        impostor=np.array(impostor, dtype=np.float64),
        genuine_top=tops[:ng],
        genuine_truth=truth,
        unenrolled_top=tops[ng:],
    )


def open_set_rates(scores: Scores, thresholds_genuine: list[float], thresholds_unenrolled: list[float]) -> dict[str, float]:
    """FNIR, FPIR (per-probe thresholds, so quality-aware policies are measured as shipped) and rank-1."""
    ng, nu = len(scores.genuine_top), len(scores.unenrolled_top)
    missed = sum(
        1
        for (name, s), truth, t in zip(scores.genuine_top, scores.genuine_truth, thresholds_genuine, strict=True)
        if name != truth or s < t
    )
    false_pos = sum(1 for (name, s), t in zip(scores.unenrolled_top, thresholds_unenrolled, strict=True) if name and s >= t)
    rank1 = sum(1 for (name, _), truth in zip(scores.genuine_top, scores.genuine_truth, strict=True) if name == truth)
    return {
        "fnir": missed / ng if ng else 0.0,
        "fpir": false_pos / nu if nu else 0.0,
        "rank1": rank1 / ng if ng else 0.0,
    }


def tar_at_far(scores: Scores, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the given FAR; genuine comparisons without a face count as misses."""
    if len(scores.impostor) == 0 or len(scores.genuine) == 0:
        return 0.0, NEG_INF
    t = threshold_at_far(scores.impostor, far)
    return float(np.mean(scores.genuine >= t)), t
