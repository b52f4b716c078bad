"""The evaluation protocol, rule by rule, on labels and scores alone."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import ManifestError
from edge.measure.protocol import (
    NEG_INF,
    Sample,
    collect_scores,
    open_set_rates,
    read_manifest,
    split,
    tar_at_far,
    threshold_at_far,
)


def samples(spec: dict[str, int]) -> list[Sample]:
    return [Sample(Path(f"{ident}/{i:02d}.jpg"), ident) for ident, n in spec.items() for i in range(n)]


def test_every_fourth_identity_in_code_point_order_is_not_enrolled() -> None:
    # Upper case sorts first: B, C, a, b, c, d, e, f
    s = samples({"a": 2, "b": 2, "c": 2, "d": 2, "e": 2, "f": 2, "B": 2, "C": 2})
    sp = split(s)
    assert sp.identities == ["B", "C", "a", "b", "c", "d", "e", "f"]
    assert sorted(sp.enrolled) == ["B", "C", "a", "c", "d", "e"]
    assert {s[i].identity for i in sp.unenrolled} == {"b", "f"}


def test_first_k_images_in_path_order_are_enrolled_and_the_rest_probe() -> None:
    s = [Sample(Path("x/3.jpg"), "x"), Sample(Path("x/1.jpg"), "x"), Sample(Path("x/2.jpg"), "x")]
    sp = split(s, enrol=2)
    assert [s[i].path.name for i in sp.enrolled["x"]] == ["1.jpg", "2.jpg"]
    assert [s[i].path.name for i in sp.genuine] == ["3.jpg"]


def test_single_image_identities_become_impostor_probes() -> None:
    sp = split(samples({"a": 1, "b": 3}))
    assert list(sp.enrolled) == ["b"]
    assert len(sp.unenrolled) == 1 and len(sp.genuine) == 2


def test_missing_faces_score_minus_infinity_but_keep_their_place_in_the_denominators() -> None:
    s = samples({"a": 2, "b": 2, "c": 2, "d": 1})
    e = {i: np.eye(4, dtype=np.float32)[ord(x.identity) - ord("a")] for i, x in enumerate(s)}
    emb: list[np.ndarray | None] = [e[i] for i in range(len(s))]
    emb[1] = None  # a's probe was not detected
    sc = collect_scores(s, emb, split(s))
    assert len(sc.genuine) == 3 and sc.genuine[0] == NEG_INF
    assert len(sc.impostor) == 3 * 2 + 1 * 3  # genuine probes vs 2 others, the unenrolled vs all 3
    tar, _ = tar_at_far(sc, 0.01)
    assert tar == pytest.approx(2 / 3)
    rates = open_set_rates(sc, [0.5] * 3, [0.5])
    assert rates == {"fnir": pytest.approx(1 / 3), "fpir": 0.0, "rank1": pytest.approx(2 / 3)}


def test_threshold_at_far_allows_floor_of_far_times_impostors() -> None:
    imp = np.array([0.1, 0.2, 0.3, 0.9, 0.8])
    assert threshold_at_far(imp, 0.2) == pytest.approx(0.8, abs=1e-12) and threshold_at_far(imp, 0.2) > 0.8
    assert threshold_at_far(imp, 0.1) > 0.9


@given(
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=300),
    st.sampled_from([0.001, 0.01, 0.1, 0.5]),
)
def test_threshold_at_far_is_the_lowest_that_keeps_false_accepts_within_budget(scores: list[float], far: float) -> None:
    imp = np.array(scores)
    t = threshold_at_far(imp, far)
    budget = math.floor(far * len(imp) + 1e-9)
    assert (imp >= t).sum() <= budget
    # Any lower threshold at one of the scores would admit more than the budget.
    lower = imp[imp < t]
    if lower.size:
        assert (imp >= lower.max()).sum() > budget


def test_manifest_paths_are_relative_to_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,identity\nsub/a.jpg,alice\n")
    assert read_manifest(tmp_path / "m.csv") == [Sample(tmp_path / "sub/a.jpg", "alice")]


@pytest.mark.parametrize("text", ["file,who\na.jpg,x\n", "path,identity\n,x\n", ""])
def test_malformed_manifests_are_refused(tmp_path: Path, text: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError):
        read_manifest(tmp_path / "m.csv")


@given(
    st.lists(st.tuples(st.sampled_from("ABCDEFGHabcdefgh"), st.integers(0, 50)), min_size=1, max_size=60),
    st.integers(1, 3),
)
def test_the_split_puts_every_image_in_exactly_one_role(rows: list[tuple[str, int]], enrol: int) -> None:
    s = [Sample(Path(f"{ident}/{n}-{k}.jpg"), ident) for k, (ident, n) in enumerate(rows)]
    sp = split(s, enrol)
    used = sorted([i for v in sp.enrolled.values() for i in v] + sp.genuine + sp.unenrolled)
    assert used == list(range(len(s)))
    assert all(len(v) <= enrol for v in sp.enrolled.values())


def test_extra_gallery_embeddings_of_an_enrolled_image_count_towards_its_identity_max() -> None:
    s = samples({"a": 2, "b": 2, "c": 2, "d": 1})
    emb: list[np.ndarray | None] = [np.eye(4, dtype=np.float32)[ord(x.identity) - ord("a")] for x in s]
    emb[1] = np.array([0.6, 0.8, 0, 0], np.float32)  # a's probe, half-way to b
    plain = collect_scores(s, emb, split(s))
    extra = {0: [np.array([0.6, 0.8, 0, 0], np.float32)]}  # a's enrolment image seen another way
    more = collect_scores(s, emb, split(s), extra)
    assert plain.genuine[0] == pytest.approx(0.6) and more.genuine[0] == pytest.approx(1.0)
    # every other comparison against a rises to the max over its embeddings, impostors included
    assert more.impostor.sum() > plain.impostor.sum()
    # an enrolment image without a face gets no extra embeddings
    emb[0] = None
    assert collect_scores(s, emb, split(s), extra).genuine[0] == NEG_INF
