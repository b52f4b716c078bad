"""Bundle serialisation: round trips, and strict parsing of hostile bytes."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.watchlist.bundle import build_unsigned
from edge.watchlist.chunks import ENTRY_ID_RE, MAGIC, Entry, decode_chunk, encode_chunk
from edge.watchlist.errors import BundleError, ChunkTooLargeError
from edge.watchlist.manifest import parse_manifest

ids = st.from_regex(ENTRY_ID_RE, fullmatch=True)
texts = st.none() | st.text(max_size=40)


@st.composite
def entries(draw: st.DrawFn, dim: int = 16) -> list[Entry]:
    n = draw(st.integers(1, 12))
    out = []
    for eid in draw(st.lists(ids, min_size=n, max_size=n, unique=True)):
        k = draw(st.integers(1, 4))
        raw = np.array(draw(st.lists(st.floats(-1, 1, width=32), min_size=k * dim, max_size=k * dim)), dtype=np.float32)
        raw = raw.reshape(k, dim)
        raw[:, 0] += 2.0  # keep away from zero vectors
        vec = raw / np.linalg.norm(raw, axis=1, keepdims=True)
        expires = draw(st.none() | st.just("2030-01-02T03:04:05.678Z"))
        thr = draw(st.none() | st.floats(-1, 1))
        out.append(Entry(eid, vec, draw(texts), draw(texts), expires, thr))
    return out


@given(entries(), st.sampled_from(["float16", "float32"]))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_chunks_round_trip(items: list[Entry], dtype: str) -> None:
    back = decode_chunk(encode_chunk(items, dtype), dtype, 16)
    tol = 2e-3 if dtype == "float16" else 1e-6
    for a, b in zip(items, back, strict=True):
        assert (a.entry_id, a.label, a.case_ref, a.expires_at, a.threshold) == (
            b.entry_id,
            b.label,
            b.case_ref,
            b.expires_at,
            b.threshold,
        )
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=tol)


@given(entries(), st.integers(1, 10**9), st.text(min_size=1, max_size=20, alphabet="abcdefgh-_."))
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
def test_manifests_round_trip_through_their_canonical_bytes(items: list[Entry], version: int, name: str) -> None:
    m, chunks = build_unsigned(
        items,
        name=name,
        version=version,
        embedding_space="s" * 64,
        expires_at=datetime(2031, 1, 1, tzinfo=UTC),
        max_chunk_bytes=800,
    )
    assert parse_manifest(m.to_bytes()) == m
    assert sum(c.entries for c in m.chunks) == len(items) == m.entry_count
    assert all(len(c) <= 800 or len(m.chunks) == 1 for c in chunks)


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_arbitrary_bytes_never_crash_the_chunk_parser(data: bytes) -> None:
    for payload in (data, MAGIC + data):
        with contextlib.suppress(BundleError):
            decode_chunk(payload, "float16", 16)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
@settings(max_examples=300)
def test_arbitrary_bytes_never_crash_the_manifest_parser(data: bytes) -> None:
    with contextlib.suppress(BundleError):
        parse_manifest(data)


def test_an_entry_too_big_for_any_chunk_is_refused_at_build() -> None:
    e = Entry("big", np.ones((64, 4096), dtype=np.float32) / 64)
    with pytest.raises(ChunkTooLargeError):
        build_unsigned(
            [e],
            name="x",
            version=1,
            embedding_space="s",
            expires_at=datetime.now(UTC) + timedelta(days=1),
            dtype="float32",
        )
