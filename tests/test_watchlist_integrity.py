"""Watchlist integrity on the device: what is acked is what is stored, and no rebuild or race rolls the list back.

Real SQLite files throughout; the interleavings are driven step by step, not by timing.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import audit
from edge.db import connect
from edge.dbcheck import check_and_recover
from edge.match import Matcher
from edge.watchlist.bundle import Bundle, build_unsigned, sign_manifest
from edge.watchlist.chunks import Entry
from edge.watchlist.keys import key_id
from edge.watchlist.manifest import now_utc
from edge.watchlist.store import STAGE_BATCH, Prepared, WatchlistStore
from tools.synthetic import SPACE, random_entries, signed_bundle


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def keys(key: Ed25519PrivateKey) -> dict[str, object]:
    return {key_id(key.public_key()): key.public_key()}


def apply(store: WatchlistStore, b: Bundle, key: Ed25519PrivateKey) -> object:
    return store.apply(b, keys(key), embedding_space=SPACE)  # type: ignore[arg-type]


def with_thresholds(entries: list[Entry], value: float) -> list[Entry]:
    return [Entry(e.entry_id, e.embeddings, threshold=value) for e in entries]


def test_a_threshold_of_minus_zero_is_stored_matched_and_triggers_no_rebuild(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    db = tmp_path / "edge.db"
    store = WatchlistStore(connect(db))
    entries = with_thresholds(random_entries(20), -0.0)  # what a CSV threshold of "-0" becomes
    bundle = signed_bundle(entries, key)
    assert b'"threshold":-0.0' in bundle.chunks[0], "the chunk really carries negative zero"
    result = store.apply(bundle, keys(key), embedding_space=SPACE)  # type: ignore[arg-type]
    assert result.ok and result.entry_count == 20
    assert store.damaged_entries() == (0, [])
    m = Matcher.from_store(store, "fleet")
    assert m is not None and m.entry_count == 20, "every acked entry is matched"
    [match] = m.search(entries[3].embeddings)
    assert match is not None and match.entry_id == entries[3].entry_id
    store.conn.close()
    assert check_and_recover(db).ok, "the next start finds nothing damaged"


def test_after_a_rebuild_an_older_signed_bundle_is_still_refused_and_the_current_one_comes_back(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    db = tmp_path / "data" / "edge.db"
    store = WatchlistStore(connect(db))
    v1 = signed_bundle(random_entries(30, seed=1), key, version=1)
    v2 = signed_bundle(random_entries(30, seed=2), key, version=2)
    assert apply(store, v1, key).ok and apply(store, v2, key).ok  # type: ignore[attr-defined]
    with store.conn as c:  # bit rot in a stored embedding: the next start moves the database aside
        blob = bytearray(c.execute("SELECT embeddings FROM entries LIMIT 1").fetchone()[0])
        blob[5] ^= 0x40
        c.execute("UPDATE entries SET embeddings = ? WHERE id = (SELECT MIN(id) FROM entries)", (bytes(blob),))
    store.conn.close()
    report = check_and_recover(db)
    assert not report.ok and report.moved_aside_to
    fresh = WatchlistStore(connect(db))
    assert fresh.current("fleet") is None, "the rebuilt database holds no watchlist"

    replay = apply(fresh, v1, key)
    assert not replay.ok and replay.reason == "older_version"  # type: ignore[attr-defined]
    other_v2 = signed_bundle(random_entries(30, seed=9), key, version=2)
    assert apply(fresh, other_v2, key).reason == "older_version"  # type: ignore[attr-defined]
    back = apply(fresh, v2, key)
    assert back.ok, "the version held before the rebuild (the one retained on the broker) is applied again"  # type: ignore[attr-defined]
    assert [r.outcome for r in audit.records(fresh.conn, "watchlist.refused")] == ["older_version", "older_version"]


def test_entries_that_sqlite_did_not_store_as_sent_are_refused_not_acked(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    store = WatchlistStore(connect(tmp_path / "edge.db"))
    assert apply(store, signed_bundle(random_entries(10, seed=1), key, version=1), key).ok  # type: ignore[attr-defined]
    # Something between the writer and the disk changes a value (here a trigger; in the field a driver, a filesystem).
    store.conn.execute(
        "CREATE TRIGGER alter_label AFTER INSERT ON entries WHEN NEW.entry_id = 'e0000004' "
        "BEGIN UPDATE entries SET label = 'changed' WHERE id = NEW.id; END"
    )
    result = apply(store, signed_bundle(random_entries(10, seed=2), key, version=2), key)
    assert not result.ok and result.reason == "not_stored_as_sent" and "e0000004" in result.message  # type: ignore[attr-defined]
    info = store.current("fleet")
    assert info is not None and info.version == 1, "the old version keeps serving"
    assert store.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 10, "nothing of the refused bundle is left"
    assert audit.records(store.conn, "watchlist.refused")[-1].outcome == "not_stored_as_sent"


def test_two_appliers_interleaved_end_at_the_newer_version(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    db = tmp_path / "edge.db"
    daemon, operator = WatchlistStore(connect(db)), WatchlistStore(connect(db))
    v6 = signed_bundle(random_entries(10, seed=6), key, version=6)
    v7 = signed_bundle(random_entries(10, seed=7), key, version=7)
    # `edge watchlist apply` checks v6 while nothing is held yet ...
    late = operator.prepare(v6, keys(key), embedding_space=SPACE)  # type: ignore[arg-type]
    assert isinstance(late, Prepared)
    # ... the daemon applies v7 meanwhile ...
    assert apply(daemon, v7, key).ok  # type: ignore[attr-defined]
    # ... and v6 reaches its write: re-checked under the write lock, refused.
    result = operator.commit(late)
    assert not result.ok and result.reason == "older_version"
    info = daemon.current("fleet")
    assert info is not None and info.version == 7
    m = Matcher.from_store(daemon, "fleet")
    assert m is not None and m.version == 7 and m.entry_count == 10
    assert daemon.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 10, "v6's staged rows are gone"


def test_a_signed_version_beyond_sqlite_integers_is_refused_with_a_reason_and_audited(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    store = WatchlistStore(connect(tmp_path / "edge.db"))
    manifest, chunks = build_unsigned(
        random_entries(3), name="fleet", version=2**63, embedding_space=SPACE,
        expires_at=now_utc().replace(year=now_utc().year + 1),
    )  # fmt: skip
    data, sig = sign_manifest(manifest, key)
    result = store.apply(Bundle(data, sig, dict(enumerate(chunks))), keys(key), embedding_space=SPACE)  # type: ignore[arg-type]
    assert not result.ok and result.reason == "version_out_of_range"
    assert audit.records(store.conn, "watchlist.refused")[-1].outcome == "version_out_of_range"


def test_a_large_apply_holds_the_write_lock_only_in_short_transactions(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    store = WatchlistStore(connect(tmp_path / "edge.db"))
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    assert apply(store, signed_bundle(random_entries(9000, dimension=16), key), key).ok  # type: ignore[attr-defined]
    store.conn.set_trace_callback(None)
    inserts_per_txn: list[int] = []
    for s in statements:
        if s.startswith("BEGIN IMMEDIATE"):
            inserts_per_txn.append(0)
        elif s.startswith("INSERT INTO entries"):
            inserts_per_txn[-1] += 1
    assert sum(inserts_per_txn) == 9000
    assert max(inserts_per_txn) <= STAGE_BATCH < 9000, "no transaction writes more than one batch of entries"


def test_a_state_file_that_cannot_be_read_stops_applies_rather_than_forgetting_the_floor(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    db = tmp_path / "edge.db"
    store = WatchlistStore(connect(db))
    assert apply(store, signed_bundle(random_entries(5), key, version=3), key).ok  # type: ignore[attr-defined]
    state = tmp_path / "edge.db.watchlist-state.json"
    assert json.loads(state.read_text())["watchlists"]["fleet"]["version"] == 3
    state.write_text("{not json")
    result = apply(store, signed_bundle(random_entries(5), key, version=4), key)
    assert not result.ok and result.reason == "state_unreadable" and str(state) in result.message  # type: ignore[attr-defined]


def test_a_crash_between_stage_and_switch_leaves_the_old_list_and_its_rows(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    store = WatchlistStore(connect(tmp_path / "edge.db"))
    assert apply(store, signed_bundle(random_entries(10, seed=1), key, version=1), key).ok  # type: ignore[attr-defined]
    store.conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON audit WHEN NEW.kind = 'watchlist.applied' "
        "BEGIN SELECT RAISE(ABORT, 'power cut'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        apply(store, signed_bundle(random_entries(10, seed=2), key, version=2), key)
    m = Matcher.from_store(store, "fleet")
    assert m is not None and m.version == 1 and m.entry_count == 10
    assert np.isclose(m.search(random_entries(10, seed=1)[2].embeddings)[0].score, 1.0, atol=1e-2)  # type: ignore[union-attr]
