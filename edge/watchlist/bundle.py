"""Watchlist bundles: a signed manifest plus binary chunks of entries, and every check a device makes.

On disk a bundle is a folder::

    manifest.json      canonical JSON (sorted keys, no spaces), UTF-8
    manifest.sig       Ed25519 signature over the exact bytes of manifest.json (64 raw bytes)
    chunks/00000.bin   entries, each chunk under 1 MiB

The manifest is in ``edge.watchlist.manifest``, the chunk format in ``edge.watchlist.chunks``,
the keys in ``edge.watchlist.keys`` and the refusals in ``edge.watchlist.errors``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.watchlist.chunks import MAX_CHUNK_BYTES, Entry, decode_chunk, pack_chunks
from edge.watchlist.errors import (
    BundleError,
    BundleExpiredError,
    ChunkFormatError,
    ChunkHashError,
    ChunkMissingError,
    ChunkTooLargeError,
    EmbeddingSpaceError,
    ManifestFormatError,
    ReplayError,
    RollbackError,
    SignatureError,
    UnknownKeyError,
    WrongWatchlistError,
)
from edge.watchlist.keys import key_id
from edge.watchlist.manifest import ChunkRef, Manifest, chunk_name, format_time, now_utc, parse_manifest, parse_time

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
