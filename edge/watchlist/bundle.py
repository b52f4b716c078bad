"""Watchlist bundles: a signed manifest plus binary chunks of entries, and every check a device makes.

On disk a bundle is a folder::

    manifest.json      canonical JSON (sorted keys, no spaces), UTF-8
    manifest.sig       Ed25519 signature over the exact bytes of manifest.json (64 raw bytes)
    chunks/00000.bin   entries, each chunk under 1 MiB

A chunk is ``MAGIC``, a 4-byte big-endian length, that many bytes of a JSON array with one
object per entry (``entry_id``, optional ``label``, ``case_ref``, ``expires_at``,
``threshold``, and ``n``, its number of embeddings), then the embeddings as a little-endian
``dtype`` array of shape (sum of n, dimension). Parsing is strict: a length, count or size
that does not add up is refused with the chunk's name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import EdgeError, InputFormatError
from edge.untrusted import load_json

MANIFEST_SCHEMA = "edge.watchlist-manifest/1"
MAGIC = b"EWLC1\n"
MAX_CHUNK_BYTES = 1024 * 1024
DTYPES: dict[str, np.dtype[Any]] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
MAX_INT = 2**63 - 1  # SQLite's INTEGER range: a larger signed number must be refused, not overflow the store
KEY_ID_RE = re.compile(r"[0-9a-f]{0,64}")
MAX_SPACE_LEN = 256
NAME_RE = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")  # \Z: `$` would accept a trailing newline
ENTRY_ID_RE = re.compile(r"\A[A-Za-z0-9_.:@-]{1,128}\Z")


class BundleError(EdgeError):
    """A bundle cannot be applied; ``reason`` is a short machine-readable code for acks and audit."""

    reason = "invalid"


class ManifestFormatError(BundleError):
    reason = "manifest_malformed"


class VersionRangeError(ManifestFormatError):
    reason = "version_out_of_range"


class SignatureError(BundleError):
    reason = "bad_signature"


class UnknownKeyError(BundleError):
    reason = "unknown_key"


class ReplayError(BundleError):
    reason = "replayed_version"


class RollbackError(BundleError):
    reason = "older_version"


class EmbeddingSpaceError(BundleError):
    reason = "wrong_embedding_space"


class ChunkMissingError(BundleError):
    reason = "missing_chunk"


class ChunkHashError(BundleError):
    reason = "chunk_hash_mismatch"


class ChunkTooLargeError(BundleError):
    reason = "chunk_too_large"


class ChunkFormatError(BundleError):
    reason = "chunk_malformed"


class BundleExpiredError(BundleError):
    reason = "expired"


class WrongWatchlistError(BundleError):
    reason = "wrong_watchlist"


# --- keys -------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out_dir: Path) -> tuple[Path, Path]:
    """Write ``watchlist.key`` (PKCS#8 PEM, mode 0600) and ``watchlist.pub`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = out_dir / "watchlist.key", out_dir / "watchlist.pub"
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    key_path.touch(mode=0o600, exist_ok=False)
    key_path.chmod(0o600)
    key_path.write_bytes(pem)
    pub_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path}: not an Ed25519 public key")
    return key


def trusted_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    return {key_id(k): k for k in (load_public_key(Path(p)) for p in paths)}


# --- entries and chunks -------------------------------------------------------------------------


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


# --- manifest -----------------------------------------------------------------------------------


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


# --- verification -------------------------------------------------------------------------------


def verify_signature(manifest_bytes: bytes, signature: bytes, keys: dict[str, Ed25519PublicKey]) -> Manifest:
    """Parse the manifest and check its signature against the trusted key it names."""
    manifest = parse_manifest(manifest_bytes)
    key = keys.get(manifest.key_id)
    if key is None:
        raise UnknownKeyError(
            f"manifest is signed with key {manifest.key_id}, which this device does not trust "
            f"(trusted: {', '.join(sorted(keys)) or 'none'})"
        )
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature as exc:
        raise SignatureError(f"manifest signature does not verify against trusted key {manifest.key_id}") from exc
    return manifest


def check_version(version: int, current_version: int | None) -> None:
    """No replay of the held version, no rollback to an older one."""
    if current_version is None:
        return
    if version == current_version:
        raise ReplayError(f"version {version} is the one already applied (replay)")
    if version < current_version:
        raise RollbackError(f"version {version} is older than the applied {current_version} (rollback)")


def check_manifest(
    manifest: Manifest,
    *,
    embedding_space: str | None,
    current_version: int | None,
    expected_name: str | None = None,
    now: datetime | None = None,
) -> None:
    """The checks that need no chunk: watchlist name, version (no replay or rollback), expiry, embedder."""
    if expected_name is not None and manifest.name != expected_name:
        raise WrongWatchlistError(f"bundle is for watchlist {manifest.name!r}, this device holds {expected_name!r}")
    check_version(manifest.version, current_version)
    if parse_time(manifest.expires_at, "expires_at") <= (now or now_utc()):
        raise BundleExpiredError(f"bundle expired at {manifest.expires_at}")
    if embedding_space is not None and manifest.embedding_space != embedding_space:
        raise EmbeddingSpaceError(
            f"bundle embeddings are in space {manifest.embedding_space[:16]}…, this device's embedder is "
            f"{embedding_space[:16]}… (rebuild the bundle with the device's embedder)"
        )


def check_chunk(manifest: Manifest, index: int, data: bytes) -> list[Entry]:
    ref = manifest.chunks[index]
    if len(data) > MAX_CHUNK_BYTES:
        raise ChunkTooLargeError(f"{ref.file} is {len(data)} bytes, over the {MAX_CHUNK_BYTES}-byte limit")
    if len(data) != ref.size:
        raise ChunkHashError(f"{ref.file} is {len(data)} bytes, the manifest says {ref.size} (truncated or altered)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != ref.sha256:
        raise ChunkHashError(f"{ref.file} has sha256 {digest[:16]}…, the manifest says {ref.sha256[:16]}… (altered)")
    entries = decode_chunk(data, manifest.dtype, manifest.dimension, name=ref.file)
    if len(entries) != ref.entries:
        raise ChunkFormatError(f"{ref.file} holds {len(entries)} entries, the manifest says {ref.entries}")
    return entries


def check_entries(manifest: Manifest, entries: list[Entry]) -> None:
    ids = [e.entry_id for e in entries]
    if len(set(ids)) != len(ids):
        raise ChunkFormatError("bundle lists an entry_id twice")
    if sum(e.embeddings.shape[0] for e in entries) != manifest.embedding_count:
        raise ChunkFormatError("bundle embedding count differs from the manifest's embedding_count")


@dataclass
class Bundle:
    manifest_bytes: bytes
    signature: bytes
    chunks: dict[int, bytes]

    def manifest(self) -> Manifest:
        return parse_manifest(self.manifest_bytes)


def verify_bundle(
    bundle: Bundle,
    keys: dict[str, Ed25519PublicKey],
    *,
    embedding_space: str | None,
    current_version: int | None,
    expected_name: str | None = None,
    now: datetime | None = None,
) -> tuple[Manifest, list[Entry]]:
    """Every check a device makes before applying; returns the manifest and the decoded entries."""
    manifest = verify_signature(bundle.manifest_bytes, bundle.signature, keys)
    return manifest, check_contents(
        bundle, manifest, embedding_space=embedding_space, current_version=current_version, expected_name=expected_name, now=now
    )


def check_contents(
    bundle: Bundle,
    manifest: Manifest,
    *,
    embedding_space: str | None,
    current_version: int | None,
    expected_name: str | None = None,
    now: datetime | None = None,
) -> list[Entry]:
    """The checks after the signature: manifest fields, expiry, every chunk's size and hash, the entries."""
    check_manifest(
        manifest, embedding_space=embedding_space, current_version=current_version, expected_name=expected_name, now=now
    )
    entries: list[Entry] = []
    for i, ref in enumerate(manifest.chunks):
        data = bundle.chunks.get(i)
        if data is None:
            raise ChunkMissingError(f"{ref.file} is missing ({len(bundle.chunks)} of {len(manifest.chunks)} chunks present)")
        entries.extend(check_chunk(manifest, i, data))
    check_entries(manifest, entries)
    return entries


# --- building and folders -----------------------------------------------------------------------


def build_unsigned(
    entries: Sequence[Entry],
    *,
    name: str,
    version: int,
    embedding_space: str,
    expires_at: datetime,
    dtype: str = "float16",
    key_id_: str = "",
    issued_at: datetime | None = None,
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
) -> tuple[Manifest, list[bytes]]:
    if not entries:
        raise BundleError("a watchlist needs at least one entry")
    dims = {e.embeddings.shape[1] for e in entries}
    if len(dims) != 1:
        raise BundleError(f"entries have different embedding sizes {sorted(dims)}")
    dimension = dims.pop()
    chunks = pack_chunks(entries, dtype, max_chunk_bytes)
    refs = []
    for i, data in enumerate(chunks):
        n = len(decode_chunk(data, dtype, dimension))
        refs.append(ChunkRef(file=chunk_name(i), sha256=hashlib.sha256(data).hexdigest(), size=len(data), entries=n))
    manifest = Manifest(
        name=name,
        version=version,
        issued_at=format_time(issued_at or now_utc()),
        expires_at=format_time(expires_at),
        embedding_space=embedding_space,
        dimension=int(dimension),
        dtype=dtype,
        entry_count=len(entries),
        embedding_count=sum(int(e.embeddings.shape[0]) for e in entries),
        key_id=key_id_,
        chunks=tuple(refs),
    )
    return manifest, chunks


def with_key_id(manifest: Manifest, kid: str) -> Manifest:
    return Manifest(**{**manifest.__dict__, "key_id": kid})


def sign_manifest(manifest: Manifest, private: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """The manifest bound to the signing key's id, and its signature."""
    data = with_key_id(manifest, key_id(private.public_key())).to_bytes()
    return data, private.sign(data)


def write_bundle(out: Path, manifest_bytes: bytes, chunks: Sequence[bytes], signature: bytes | None) -> None:
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    for old in (out / "chunks").glob("*.bin"):
        old.unlink()
    for i, data in enumerate(chunks):
        (out / chunk_name(i)).write_bytes(data)
    (out / "manifest.json").write_bytes(manifest_bytes)
    sig = out / "manifest.sig"
    if signature is not None:
        sig.write_bytes(signature)
    elif sig.exists():
        sig.unlink()


def read_bundle(folder: Path) -> Bundle:
    """The bundle in ``folder``; missing chunks are left out for the verifier to name."""
    try:
        manifest_bytes = (folder / "manifest.json").read_bytes()
    except OSError as exc:
        raise ManifestFormatError(f"{folder}: no readable manifest.json ({exc.strerror or exc})") from exc
    try:
        signature = (folder / "manifest.sig").read_bytes()
    except OSError as exc:
        raise SignatureError(f"{folder}: unsigned bundle (no manifest.sig); sign it with `edge watchlist sign`") from exc
    manifest = parse_manifest(manifest_bytes)
    chunks: dict[int, bytes] = {}
    for i, ref in enumerate(manifest.chunks):
        path = folder / ref.file
        if path.is_file():
            chunks[i] = path.read_bytes()
    return Bundle(manifest_bytes, signature, chunks)


def iter_entries(bundle: Bundle) -> Iterator[Entry]:
    m = bundle.manifest()
    for i, data in sorted(bundle.chunks.items()):
        yield from decode_chunk(data, m.dtype, m.dimension, name=m.chunks[i].file)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
