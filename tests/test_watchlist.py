"""Watchlist bundles into the device store: what is applied, what is refused and why, and what keeps matching."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import audit
from edge.analyze import FaceAnalyser
from edge.db import connect
from edge.match import Matcher
from edge.sources import load_image
from edge.watchlist.bundle import Bundle, build_unsigned, sign_manifest, verify_bundle
from edge.watchlist.chunks import MAX_CHUNK_BYTES, Entry
from edge.watchlist.errors import (
    BundleError,
    BundleExpiredError,
    ChunkFormatError,
    ChunkHashError,
    ChunkMissingError,
    ChunkTooLargeError,
    EmbeddingSpaceError,
    ReplayError,
    RollbackError,
    SignatureError,
    UnknownKeyError,
    WrongWatchlistError,
)
from edge.watchlist.keys import key_id
from edge.watchlist.manifest import format_time
from edge.watchlist.store import WatchlistStore
from tests.conftest import rows

# Four people with several photos each: the first photo enrols, the last one probes.
PEOPLE = ["Angelina", "Jennifer", "Mark", "Jack"]


@dataclass
class Faces:
    enrol: dict[str, np.ndarray]
    probe: dict[str, np.ndarray]
    space: str


@pytest.fixture(scope="module")
def faces(analyser: FaceAnalyser, faces_dir: Path) -> Faces:
    by_person: dict[str, list[str]] = {}
    for r in rows("faces.csv"):
        by_person.setdefault(r["identity"], []).append(r["path"])
    enrol, probe = {}, {}
    for p in PEOPLE:
        paths = sorted(by_person[p])
        assert len(paths) >= 2, p
        emb = [analyser.analyse(load_image(faces_dir / x), largest_only=True)[0].embedding for x in (paths[0], paths[-1])]
        enrol[p], probe[p] = emb[0], emb[1]
    return Faces(enrol, probe, analyser.embedder.embedding_space)


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def store(tmp_path: Path) -> WatchlistStore:
    return WatchlistStore(connect(tmp_path / "edge.db"))


def entries_for(faces: Faces, people: list[str]) -> list[Entry]:
    return [Entry(entry_id=f"case-{p.lower()}", embeddings=faces.enrol[p][None]) for p in people]


def make_bundle(
    faces: Faces,
    key: Ed25519PrivateKey,
    *,
    version: int,
    people: list[str] = PEOPLE[:3],
    space: str | None = None,
    expires: timedelta = timedelta(days=30),
    max_chunk_bytes: int = MAX_CHUNK_BYTES,
    name: str = "city",
) -> Bundle:
    manifest, chunks = build_unsigned(
        entries_for(faces, people),
        name=name,
        version=version,
        embedding_space=space or faces.space,
        expires_at=datetime.now(UTC) + expires,
        max_chunk_bytes=max_chunk_bytes,
    )
    data, sig = sign_manifest(manifest, key)
    return Bundle(data, sig, dict(enumerate(chunks)))


def keys_of(key: Ed25519PrivateKey) -> dict[str, object]:
    return {key_id(key.public_key()): key.public_key()}


def best(store: WatchlistStore, faces: Faces, person: str) -> str | None:
    m = Matcher.from_store(store, "city")
    assert m is not None
    match = m.search(faces.probe[person][None])[0]
    return match.entry_id if match and match.score >= 0.5 else None


def resign(b: Bundle, key: Ed25519PrivateKey, change: Callable[[dict[str, object]], None]) -> Bundle:
    doc = json.loads(b.manifest_bytes)
    change(doc)
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return Bundle(data, key.sign(data), dict(b.chunks))


def test_a_signed_bundle_is_applied_and_its_people_match(store: WatchlistStore, faces: Faces, key: Ed25519PrivateKey) -> None:
    result = store.apply(make_bundle(faces, key, version=1), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    assert result.ok and result.entry_count == 3
    for p in PEOPLE[:3]:
        assert best(store, faces, p) == f"case-{p.lower()}"
    assert best(store, faces, "Jack") is None  # not on the list
    [rec] = audit.records(store.conn, "watchlist.applied")
    assert rec.version == 1 and rec.detail["from_version"] is None


def test_a_newer_version_replaces_the_old_one_atomically(store: WatchlistStore, faces: Faces, key: Ed25519PrivateKey) -> None:
    k = keys_of(key)
    store.apply(make_bundle(faces, key, version=1), k, embedding_space=faces.space)  # type: ignore[arg-type]
    result = store.apply(make_bundle(faces, key, version=2, people=["Jack"]), k, embedding_space=faces.space)  # type: ignore[arg-type]
    assert result.ok and result.previous_version == 1
    assert best(store, faces, "Jack") == "case-jack"
    assert best(store, faces, "Angelina") is None
    info = store.current("city")
    assert info is not None and info.version == 2 and info.entry_count == 1


Tamper = Callable[[Bundle, Bundle, Ed25519PrivateKey, Faces], Bundle]


def _flip_chunk_byte(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    data = bytearray(b.chunks[0])
    data[-10] ^= 0x01
    return Bundle(b.manifest_bytes, b.signature, {0: bytes(data)})


def _edit_manifest(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    doc = json.loads(b.manifest_bytes)
    doc["expires_at"] = "2099-01-01T00:00:00.000Z"
    return Bundle(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), b.signature, b.chunks)


def _other_key(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return make_bundle(f, Ed25519PrivateKey.generate(), version=5)


def _bad_signature_bytes(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return Bundle(b.manifest_bytes, bytes(64), b.chunks)


def _replay(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return applied  # the very bundle already applied


def _older(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return make_bundle(f, k, version=1)


def _wrong_space(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return make_bundle(f, k, version=5, space=hashlib.sha256(b"another embedder").hexdigest())


def _missing_chunk(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    full = make_bundle(f, k, version=5, max_chunk_bytes=900)
    assert len(full.chunks) >= 2
    return Bundle(full.manifest_bytes, full.signature, {i: c for i, c in full.chunks.items() if i != 1})


def _truncated(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    # Cut short and re-signed with matching hash and size: the parser itself must notice.
    fresh = make_bundle(f, k, version=5)
    cut = fresh.chunks[0][:-100]

    def change(doc: dict[str, object]) -> None:
        chunk = doc["chunks"][0]  # type: ignore[index]
        chunk.update(sha256=hashlib.sha256(cut).hexdigest(), size=len(cut))

    signed = resign(fresh, k, change)
    return Bundle(signed.manifest_bytes, signed.signature, {0: cut})


def _expired(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return make_bundle(f, k, version=5, expires=timedelta(seconds=-1))


def _oversized(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    many = [Entry(f"e{i}", np.tile(f.enrol["Jack"], (60, 1))) for i in range(50)]
    manifest, chunks = build_unsigned(
        many,
        name="city",
        version=5,
        embedding_space=f.space,
        expires_at=datetime.now(UTC) + timedelta(days=1),
        dtype="float32",
        max_chunk_bytes=4 * 2**20,
    )
    data, sig = sign_manifest(manifest, k)
    return Bundle(data, sig, dict(enumerate(chunks)))


def _wrong_watchlist(applied: Bundle, b: Bundle, k: Ed25519PrivateKey, f: Faces) -> Bundle:
    return make_bundle(f, k, version=5, name="elsewhere")


@pytest.mark.parametrize(
    ("tamper", "error", "reason"),
    [
        (_flip_chunk_byte, ChunkHashError, "chunk_hash_mismatch"),
        (_edit_manifest, SignatureError, "bad_signature"),
        (_other_key, UnknownKeyError, "unknown_key"),
        (_bad_signature_bytes, SignatureError, "bad_signature"),
        (_replay, ReplayError, "replayed_version"),
        (_older, RollbackError, "older_version"),
        (_wrong_space, EmbeddingSpaceError, "wrong_embedding_space"),
        (_missing_chunk, ChunkMissingError, "missing_chunk"),
        (_truncated, ChunkFormatError, "chunk_malformed"),
        (_expired, BundleExpiredError, "expired"),
        (_oversized, ChunkTooLargeError, "chunk_too_large"),
        (_wrong_watchlist, WrongWatchlistError, "wrong_watchlist"),
    ],
)
def test_a_bad_bundle_is_refused_with_its_own_error_and_audited_while_the_old_list_keeps_matching(
    store: WatchlistStore,
    faces: Faces,
    key: Ed25519PrivateKey,
    tamper: Tamper,
    error: type[BundleError],
    reason: str,
) -> None:
    k = keys_of(key)
    good = make_bundle(faces, key, version=3)
    assert store.apply(good, k, embedding_space=faces.space, expected_name="city").ok  # type: ignore[arg-type]
    bad = tamper(good, make_bundle(faces, key, version=4), key, faces)
    with pytest.raises(error):
        verify_bundle(bad, k, embedding_space=faces.space, current_version=3, expected_name="city")  # type: ignore[arg-type]
    result = store.apply(bad, k, embedding_space=faces.space, expected_name="city")  # type: ignore[arg-type]
    assert not result.ok and result.reason == reason
    refusals = audit.records(store.conn, "watchlist.refused")
    assert [r.outcome for r in refusals] == [reason]
    assert refusals[0].detail["from_version"] == 3
    info = store.current("city")
    assert info is not None and info.version == 3
    assert best(store, faces, "Mark") == "case-mark"
    assert audit.verify_chain(store.conn) is None


def test_a_removed_key_stops_verifying_and_a_second_trusted_key_allows_rotation(faces: Faces, key: Ed25519PrivateKey) -> None:
    new = Ed25519PrivateKey.generate()
    both = {**keys_of(key), **keys_of(new)}
    b = make_bundle(faces, new, version=1)
    verify_bundle(b, both, embedding_space=faces.space, current_version=None)  # type: ignore[arg-type]
    with pytest.raises(UnknownKeyError):
        verify_bundle(b, keys_of(key), embedding_space=faces.space, current_version=None)  # type: ignore[arg-type]


def test_an_entry_stops_matching_when_its_expiry_passes(store: WatchlistStore, faces: Faces, key: Ed25519PrivateKey) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    entries = entries_for(faces, ["Mark", "Jack"])
    entries[0] = Entry("case-mark", entries[0].embeddings, expires_at=format_time(soon))
    manifest, chunks = build_unsigned(
        entries, name="city", version=1, embedding_space=faces.space, expires_at=datetime.now(UTC) + timedelta(days=3)
    )
    data, sig = sign_manifest(manifest, key)
    assert store.apply(Bundle(data, sig, dict(enumerate(chunks))), keys_of(key), embedding_space=faces.space).ok  # type: ignore[arg-type]
    m = Matcher.from_store(store, "city")
    assert m is not None
    before = m.search(faces.probe["Mark"][None], now=soon.timestamp() - 1)[0]
    after = m.search(faces.probe["Mark"][None], now=soon.timestamp() + 1)[0]
    assert before is not None and before.entry_id == "case-mark"
    assert after is None or after.entry_id != "case-mark"
    # The whole list stops matching once the bundle itself has expired.
    assert m.search(faces.probe["Jack"][None], now=(datetime.now(UTC) + timedelta(days=4)).timestamp()) == [None]


def test_revoked_entries_stop_matching_at_once(store: WatchlistStore, faces: Faces, key: Ed25519PrivateKey) -> None:
    store.apply(make_bundle(faces, key, version=1), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    assert store.revoke("city", ["case-mark"]) == 1
    assert best(store, faces, "Mark") is None
    assert best(store, faces, "Angelina") == "case-angelina"
    assert audit.records(store.conn, "watchlist.revoked")[0].detail["entry_ids"] == ["case-mark"]


def test_a_stored_entry_whose_bytes_were_altered_is_not_matched(
    store: WatchlistStore, faces: Faces, key: Ed25519PrivateKey
) -> None:
    store.apply(make_bundle(faces, key, version=1), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    row = store.conn.execute("SELECT id, embeddings FROM entries WHERE entry_id = 'case-mark'").fetchone()
    blob = bytearray(row[1])
    blob[3] ^= 0x40
    store.conn.execute("UPDATE entries SET embeddings = ? WHERE id = ?", (bytes(blob), row[0]))
    assert best(store, faces, "Mark") is None
    assert best(store, faces, "Angelina") == "case-angelina"


def test_the_audit_chain_detects_an_edited_record(store: WatchlistStore, faces: Faces, key: Ed25519PrivateKey) -> None:
    store.apply(make_bundle(faces, key, version=1), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    store.apply(make_bundle(faces, key, version=1), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    assert audit.verify_chain(store.conn) is None
    store.conn.execute("UPDATE audit SET outcome = 'applied' WHERE id = 2")
    assert audit.verify_chain(store.conn) == 2


def test_a_crash_mid_apply_leaves_the_old_watchlist(tmp_path: Path, faces: Faces, key: Ed25519PrivateKey) -> None:
    conn = connect(tmp_path / "edge.db")
    store = WatchlistStore(conn)
    store.apply(make_bundle(faces, key, version=1), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON audit WHEN NEW.kind = 'watchlist.applied' "
        "BEGIN SELECT RAISE(ABORT, 'power cut'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.apply(make_bundle(faces, key, version=2, people=["Jack"]), keys_of(key), embedding_space=faces.space)  # type: ignore[arg-type]
    info = store.current("city")
    assert info is not None and info.version == 1
    assert best(store, faces, "Mark") == "case-mark"
