"""The watchlist manifest: canonical JSON naming the watchlist, its version, expiry, embedder and chunks; and its times."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edge.errors import InputFormatError
from edge.untrusted import load_json
from edge.watchlist.errors import ManifestFormatError, VersionRangeError

MANIFEST_SCHEMA = "edge.watchlist-manifest/1"
DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
MAX_INT = 2**63 - 1  # SQLite's INTEGER range: a larger signed number must be refused, not overflow the store
KEY_ID_RE = re.compile(r"[0-9a-f]{0,64}")
MAX_SPACE_LEN = 256
NAME_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")  # \Z: `$` would accept a trailing newline


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(value: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise ManifestFormatError(f"{what}: not an RFC 3339 time: {str(value)[:64]!r}") from exc
    if t.tzinfo is None:
        raise ManifestFormatError(f"{what}: time without a zone: {value[:64]!r}")
    return t


@dataclass(frozen=True)
class ChunkRef:
    file: str
    sha256: str
    size: int
    entries: int


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    issued_at: str
    expires_at: str
    embedding_space: str
    dimension: int
    dtype: str
    entry_count: int
    embedding_count: int
    key_id: str
    chunks: tuple[ChunkRef, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Canonical serialisation: sorted keys, no whitespace, UTF-8."""
        doc = {
            "schema": MANIFEST_SCHEMA,
            "name": self.name,
            "version": self.version,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "embedding_space": self.embedding_space,
            "dimension": self.dimension,
            "dtype": self.dtype,
            "entry_count": self.entry_count,
            "embedding_count": self.embedding_count,
            "key_id": self.key_id,
            "chunks": [c.__dict__ for c in self.chunks],
            **self.extra,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _req(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in doc:
        raise ManifestFormatError(f"manifest lacks {key!r}")
    v = doc[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise ManifestFormatError(f"manifest {key!r} has the wrong type ({type(v).__name__})")
    return v


def parse_manifest(data: bytes) -> Manifest:
    try:
        doc = load_json(data)
    except InputFormatError as exc:
        raise ManifestFormatError(f"manifest: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestFormatError("manifest must be a JSON object")
    if doc.get("schema") != MANIFEST_SCHEMA:
        raise ManifestFormatError(f"manifest schema {str(doc.get('schema'))[:64]!r}, expected {MANIFEST_SCHEMA!r}")
    name = _req(doc, "name", str)
    if not NAME_RE.match(name):
        raise ManifestFormatError(f"manifest name {name[:70]!r} is not allowed")
    version = _req(doc, "version", int)
    if not 1 <= version <= MAX_INT:
        raise VersionRangeError(f"manifest version must be between 1 and 2^63-1, not {str(version)[:24]}")
    dtype = _req(doc, "dtype", str)
    if dtype not in DTYPES:
        raise ManifestFormatError(f"manifest dtype {dtype!r} is not one of {sorted(DTYPES)}")
    dimension = _req(doc, "dimension", int)
    if not 8 <= dimension <= 4096:
        raise ManifestFormatError(f"manifest dimension {dimension} is out of range")
    issued, expires = _req(doc, "issued_at", str), _req(doc, "expires_at", str)
    parse_time(issued, "manifest issued_at")
    parse_time(expires, "manifest expires_at")
    chunks = []
    for i, c in enumerate(_req(doc, "chunks", list)):
        if not isinstance(c, dict):
            raise ManifestFormatError(f"manifest chunk {i} is not an object")
        ref = ChunkRef(
            file=_req(c, "file", str),
            sha256=_req(c, "sha256", str),
            size=_req(c, "size", int),
            entries=_req(c, "entries", int),
        )
        if not (0 <= ref.size <= MAX_INT and 0 <= ref.entries <= MAX_INT):
            raise ManifestFormatError(f"manifest chunk {i} has a size or entry count out of range")
        if ref.file != chunk_name(i):
            raise ManifestFormatError(f"manifest chunk {i} is named {ref.file[:40]!r}, expected {chunk_name(i)!r}")
        chunks.append(ref)
    known = {"schema", "name", "version", "issued_at", "expires_at", "embedding_space", "dimension", "dtype"}
    known |= {"entry_count", "embedding_count", "key_id", "chunks"}
    m = Manifest(
        name=name,
        version=version,
        issued_at=issued,
        expires_at=expires,
        embedding_space=_req(doc, "embedding_space", str),
        dimension=dimension,
        dtype=dtype,
        entry_count=_req(doc, "entry_count", int),
        embedding_count=_req(doc, "embedding_count", int),
        key_id=_req(doc, "key_id", str),
        chunks=tuple(chunks),
        extra={k: v for k, v in doc.items() if k not in known},
    )
    if not (0 <= m.entry_count <= MAX_INT and 0 <= m.embedding_count <= MAX_INT):
        raise ManifestFormatError("manifest entry_count or embedding_count out of range")
    if not KEY_ID_RE.fullmatch(m.key_id):
        raise ManifestFormatError(f"manifest key_id {m.key_id[:20]!r}… is not a key id (up to 64 hex digits)")
    if len(m.embedding_space) > MAX_SPACE_LEN:
        raise ManifestFormatError(f"manifest embedding_space is longer than {MAX_SPACE_LEN} characters")
    if sum(c.entries for c in m.chunks) != m.entry_count:
        raise ManifestFormatError("manifest entry_count differs from the sum over its chunks")
    return m


def chunk_name(i: int) -> str:
    return f"chunks/{i:05d}.bin"


def chunks_needed(entry_count: int, per_chunk: int) -> int:
    return max(1, math.ceil(entry_count / max(1, per_chunk)))
