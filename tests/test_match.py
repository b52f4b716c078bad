"""The matcher: exact top entries with per-entry max, margin and overrides, swapped atomically."""

from __future__ import annotations

import numpy as np

from edge.match import Matcher, MatcherHolder


def unit(rng: np.random.Generator, n: int, d: int = 192) -> np.ndarray:
    m = rng.standard_normal((n, d)).astype(np.float32)
    out: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return out


def build(vectors: list[np.ndarray], thresholds: list[float | None] | None = None, announce: bool = True) -> Matcher:
    thresholds = thresholds or [None] * len(vectors)
    batch = [(f"e{i}", f"label {i}", None, t, v) for i, (v, t) in enumerate(zip(vectors, thresholds, strict=True))]
    total = sum(len(v) for v in vectors) if announce else None
    return Matcher.build([batch], name="w", version=1, sha256="x", dimension=vectors[0].shape[1], total_embeddings=total)


def test_results_equal_an_exact_float32_search_within_float16_precision() -> None:
    rng = np.random.default_rng(7)
    data = unit(rng, 5000)
    queries = data[:20] * 0.6 + unit(rng, 20) * 0.4
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    for announce in (True, False):
        m = build([v[None] for v in data], announce=announce)
        got = m.search(queries)
        exact = queries @ data.T
        for q, match in enumerate(got):
            assert match is not None
            top2 = np.sort(exact[q])[::-1][:2]
            assert match.entry_id == f"e{int(np.argmax(exact[q]))}"
            assert match.second_score is not None and match.margin is not None
            assert abs(match.score - top2[0]) < 2e-3 and abs(match.second_score - top2[1]) < 2e-3
            assert abs(match.margin - (top2[0] - top2[1])) < 4e-3


def test_an_entry_scores_the_best_of_its_embeddings_and_the_runner_up_is_another_entry() -> None:
    rng = np.random.default_rng(1)
    a = unit(rng, 6)
    q = a[4]
    other = (0.7 * q + 0.3 * unit(rng, 1)[0])[None]
    m = build([a, other / np.linalg.norm(other), unit(rng, 1)])
    [match] = m.search(q[None])
    assert match is not None and match.entry_id == "e0" and match.label == "label 0"
    assert match.score > 0.99
    assert match.second_score is not None and 0.5 < match.second_score < match.score  # e1, not another embedding of e0


def test_per_entry_threshold_travels_with_the_match() -> None:
    rng = np.random.default_rng(2)
    v = unit(rng, 2)
    m = build([v[:1], v[1:]], thresholds=[0.8, None])
    r0, r1 = m.search(v)
    assert r0 is not None and r0.entry_threshold == 0.8
    assert r1 is not None and r1.entry_threshold is None


def test_several_faces_are_scored_in_one_pass() -> None:
    rng = np.random.default_rng(3)
    v = unit(rng, 100)
    m = build([x[None] for x in v])
    got = m.search(v[[5, 50, 99]])
    assert [g.entry_id for g in got if g] == ["e5", "e50", "e99"]


def test_a_single_entry_watchlist_has_no_runner_up() -> None:
    v = unit(np.random.default_rng(4), 1)
    [match] = build([v]).search(v)
    assert match is not None and match.second_score is None and match.margin is None


def test_the_holder_swaps_in_a_new_version() -> None:
    rng = np.random.default_rng(5)
    holder = MatcherHolder()
    assert holder.matcher is None
    first, second = build([unit(rng, 1)]), build([unit(rng, 1)])
    holder.swap(first)
    assert holder.matcher is first
    holder.swap(second)
    assert holder.matcher is second


def test_memory_is_about_two_bytes_per_dimension() -> None:
    rng = np.random.default_rng(6)
    m = build([x[None] for x in unit(rng, 10_000)])
    assert m.memory_bytes < 10_000 * 192 * 2 * 1.2
