"""Watchlist chunks: the entries of a bundle in binary files, each under ``MAX_CHUNK_BYTES``.

A chunk is ``MAGIC``, a 4-byte big-endian length, that many bytes of a JSON array with one
object per entry (``entry_id``, optional ``label``, ``case_ref``, ``expires_at``,
``threshold``, and ``n``, its number of embeddings), then the embeddings as a little-endian
``dtype`` array of shape (sum of n, dimension). Parsing is strict: a length, count or size
that does not add up is refused with the chunk's name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.errors import InputFormatError
from edge.untrusted import load_json
from edge.watchlist.errors import ChunkFormatError, ChunkTooLargeError, ManifestFormatError
from edge.watchlist.manifest import DTYPES, parse_time

MAGIC = b"EWLC1\n"
MAX_CHUNK_BYTES = 1024 * 1024
ENTRY_ID_RE = re.compile(r"\A[A-Za-z0-9_.:@-]{1,128}\Z")


@dataclass(frozen=True)
class Entry:
    entry_id: str
    embeddings: np.ndarray  # (n, dimension) float32, L2-normalised
    label: str | None = None
    case_ref: str | None = None
    expires_at: str | None = None  # RFC 3339 UTC
    threshold: float | None = None

    def meta(self) -> dict[str, Any]:
        m: dict[str, Any] = {"entry_id": self.entry_id, "n": int(self.embeddings.shape[0])}
        for k in ("label", "case_ref", "expires_at", "threshold"):
            v = getattr(self, k)
            if v is not None:
                m[k] = v
        return m


def encode_chunk(entries: Sequence[Entry], dtype: str) -> bytes:
    meta = json.dumps([e.meta() for e in entries], sort_keys=True, separators=(",", ":")).encode()
    vectors = np.concatenate([e.embeddings for e in entries]).astype(DTYPES[dtype])
    return MAGIC + len(meta).to_bytes(4, "big") + meta + vectors.tobytes()


def _opt_str(value: Any, what: str, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ChunkFormatError(f"{name}: {what} must be a string")


def decode_chunk(data: bytes, dtype: str, dimension: int, *, name: str = "chunk") -> list[Entry]:
    """Entries of one chunk; any inconsistency raises ChunkFormatError naming the chunk."""
    if not data.startswith(MAGIC):
        raise ChunkFormatError(f"{name}: not a watchlist chunk (bad magic)")
    head = len(MAGIC) + 4
    if len(data) < head:
        raise ChunkFormatError(f"{name}: truncated header")
    meta_len = int.from_bytes(data[len(MAGIC) : head], "big")
    if head + meta_len > len(data):
        raise ChunkFormatError(f"{name}: truncated (entry table of {meta_len} bytes, {len(data) - head} present)")
    try:
        metas = load_json(data[head : head + meta_len])
    except InputFormatError as exc:
        raise ChunkFormatError(f"{name}: entry table: {exc}") from exc
    if not isinstance(metas, list) or not all(isinstance(m, dict) for m in metas):
        raise ChunkFormatError(f"{name}: entry table must be a list of objects")
    dt = DTYPES[dtype]
    counts = []
    for m in metas:
        n = m.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise ChunkFormatError(f"{name}: entry {m.get('entry_id')!r} has a bad embedding count {n!r}")
        counts.append(n)
    body = data[head + meta_len :]
    expected = sum(counts) * dimension * dt.itemsize
    if len(body) != expected:
        raise ChunkFormatError(f"{name}: truncated or padded (embeddings {len(body)} bytes, expected {expected})")
    vectors = np.frombuffer(body, dtype=dt).reshape(-1, dimension).astype(np.float32)
    if not np.all(np.isfinite(vectors)):
        raise ChunkFormatError(f"{name}: embeddings contain NaN or infinity")
    out, row = [], 0
    for m, n in zip(metas, counts, strict=True):
        eid = m.get("entry_id")
        if not isinstance(eid, str) or not ENTRY_ID_RE.match(eid):
            raise ChunkFormatError(f"{name}: bad entry_id {eid!r}")
        thr = m.get("threshold")
        if thr is not None and (not isinstance(thr, int | float) or isinstance(thr, bool) or not -1 <= thr <= 1):
            raise ChunkFormatError(f"{name}: entry {eid!r} has a bad threshold {thr!r}")
        expires = _opt_str(m.get("expires_at"), "expires_at", name)
        if expires is not None:
            try:
                parse_time(expires, f"{name}: entry {eid!r} expires_at")
            except ManifestFormatError as exc:
                raise ChunkFormatError(str(exc)) from exc
        emb = vectors[row : row + n]
        with np.errstate(over="ignore"):
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if np.any(norms < 1e-6):
            raise ChunkFormatError(f"{name}: entry {eid!r} has a zero embedding")
        if not np.all(np.isfinite(norms)):  # float32 values near the limit: the norm overflows and would zero the vector
            raise ChunkFormatError(f"{name}: entry {eid!r} has an embedding too large to normalise")
        out.append(
            Entry(
                entry_id=eid,
                embeddings=emb / norms,
                label=_opt_str(m.get("label"), "label", name),
                case_ref=_opt_str(m.get("case_ref"), "case_ref", name),
                expires_at=expires,
                threshold=None if thr is None else float(thr),
            )
        )
        row += n
    return out


def pack_chunks(entries: Sequence[Entry], dtype: str, max_bytes: int = MAX_CHUNK_BYTES) -> list[bytes]:
    """Split entries into encoded chunks that each stay under ``max_bytes``."""
    chunks: list[bytes] = []
    current: list[Entry] = []
    size = len(MAGIC) + 4 + 2
    for e in entries:
        cost = len(json.dumps(e.meta(), separators=(",", ":"))) + 1 + e.embeddings.size * DTYPES[dtype].itemsize
        if current and size + cost > max_bytes:
            chunks.append(encode_chunk(current, dtype))
            current, size = [], len(MAGIC) + 4 + 2
        current.append(e)
        size += cost
    if current:
        chunks.append(encode_chunk(current, dtype))
    for c in chunks:
        if len(c) > max_bytes:
            raise ChunkTooLargeError(f"an entry does not fit in a {max_bytes}-byte chunk")
    return chunks
