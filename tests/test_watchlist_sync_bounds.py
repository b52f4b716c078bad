"""The watchlist-sync handler against hostile messages: every refusal audited and acked, memory bounded.

The handler is fed the (topic, payload) pairs the MQTT thread hands it, one at a time, on a real
SQLite file; what it keeps is measured from its own counters.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import audit
from edge.publish import chunk_topic, manifest_topic
from edge.watchlist import sync as sync_module
from edge.watchlist.bundle import b64, build_unsigned, sign_manifest
from edge.watchlist.keys import key_id
from edge.watchlist.sync import WatchlistSync
from tools.synthetic import SPACE, random_entries

KEY = Ed25519PrivateKey.generate()


def make_sync(tmp: Path, timeout_s: float = 300.0) -> tuple[WatchlistSync, list[dict[str, Any]]]:
    acks: list[dict[str, Any]] = []
    s = WatchlistSync(
        tmp / "edge.db", name="fleet", keys={key_id(KEY.public_key()): KEY.public_key()}, embedding_space=SPACE,
        timeout_s=timeout_s, on_applied=lambda m: None, send_ack=acks.append,
    )  # fmt: skip
    return s, acks


def manifest_message(manifest_bytes: bytes, signature: bytes = b"\0" * 64) -> bytes:
    return json.dumps(
        {"schema": "edge.watchlist-bundle/1", "manifest": manifest_bytes.decode(), "signature": b64(signature)}
    ).encode()


def test_a_deeply_nested_manifest_message_is_refused_audited_and_acked(tmp_path: Path) -> None:
    s, acks = make_sync(tmp_path)
    s.process_safely(manifest_topic("fleet"), b'{"manifest":' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    [ack] = acks
    assert ack["outcome"] == "refused" and ack["reason"] == "manifest_malformed" and "nested" in ack["message"]
    assert audit.records(s.store.conn, "watchlist.refused")[-1].outcome == "manifest_malformed"


def test_a_signed_version_of_2_to_the_63_is_refused_audited_and_acked(tmp_path: Path) -> None:
    s, acks = make_sync(tmp_path)
    manifest, _ = build_unsigned(
        random_entries(2), name="fleet", version=2**63, embedding_space=SPACE, expires_at=datetime.now(UTC) + timedelta(days=1)
    )
    data, sig = sign_manifest(manifest, KEY)
    s.process_safely(manifest_topic("fleet"), manifest_message(data, sig))
    [ack] = acks
    assert ack["reason"] == "version_out_of_range"
    assert audit.records(s.store.conn, "watchlist.refused")[-1].outcome == "version_out_of_range"


def test_a_chunk_sent_again_is_counted_once(tmp_path: Path) -> None:
    s, _ = make_sync(tmp_path)
    for size in (1000, 5000, 1000, 1000):
        s.process_safely(chunk_topic("fleet", 9, 0), b"x" * size)
    assert s._buffered == 1000 + sync_module.CHUNK_OVERHEAD


def test_the_buffer_cap_holds_however_chunks_are_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "MAX_BUFFERED_BYTES", 30_000)
    s, _ = make_sync(tmp_path)
    for i in range(200):  # grow chunk 0 step by step and add others: the old code counted only first arrivals
        s.process_safely(chunk_topic("fleet", 9, i % 3), b"y" * (100 * i))
    held = sum(len(c) for c in s._chunks.get(9, {}).values())
    assert held <= 30_000 and s._buffered == held + sync_module.CHUNK_OVERHEAD * len(s._chunks.get(9, {}))


def test_chunks_of_a_version_whose_manifest_never_comes_are_freed(tmp_path: Path) -> None:
    s, _ = make_sync(tmp_path, timeout_s=0.001)
    for v in (11, 12, 13):
        s.process_safely(chunk_topic("fleet", v, 0), b"z" * 4096)
    assert s._buffered > 0
    time.sleep(0.01)
    s._tick()
    assert s._chunks == {} and s._buffered == 0


def test_refused_messages_are_remembered_within_a_bound_and_attacker_strings_are_clipped(tmp_path: Path) -> None:
    s, acks = make_sync(tmp_path)
    for i in range(sync_module.MAX_SEEN_REFUSED + 100):
        s.process_safely(manifest_topic("fleet"), f"not json {i}".encode())
    assert len(s._seen_refused) == sync_module.MAX_SEEN_REFUSED
    assert len(acks) == sync_module.MAX_SEEN_REFUSED + 100, "each distinct refusal is acked once"
    s.process_safely(manifest_topic("fleet"), b"not json 300")  # seen recently: not audited again
    assert len(acks) == sync_module.MAX_SEEN_REFUSED + 100
    doc = json.loads(build_unsigned(random_entries(1), name="fleet", version=3, embedding_space=SPACE,
                                       expires_at=datetime.now(UTC) + timedelta(days=1))[0].to_bytes())  # fmt: skip
    doc["key_id"] = "k" * (2 * 1024 * 1024)
    doc["issued_at"] = "t" * (2 * 1024 * 1024)
    s.process_safely(manifest_topic("fleet"), manifest_message(json.dumps(doc).encode()))
    assert acks[-1]["outcome"] == "refused" and len(acks[-1]["message"]) <= 400
    row = s.store.conn.execute("SELECT LENGTH(detail) FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    assert row[0] < 1000, "the audit record holds no megabytes of attacker text"


def test_a_refusal_hit_by_a_locked_database_is_retried_not_lost(tmp_path: Path) -> None:
    s, acks = make_sync(tmp_path)
    s.store.conn.execute("PRAGMA busy_timeout = 50")
    locker = sqlite3.connect(tmp_path / "edge.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    s.process_safely(manifest_topic("fleet"), b"garbage")
    assert acks == [] and len(s._retry) == 1
    locker.execute("COMMIT")
    s._next_retry = 0.0
    s._tick()
    assert [a["reason"] for a in acks] == ["manifest_malformed"]
