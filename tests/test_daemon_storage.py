"""The daemon's hits against a busy database and a changing watchlist: none lost, each stamped with its own version.

Real SQLite files (another connection holds the write lock, as `edge watchlist apply` or a long
transaction would) and a real Mosquitto; the daemon's pipeline is driven step by step.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import load_settings
from edge.daemon import Daemon
from edge.db import connect
from edge.match import Match, Matcher
from edge.quality import Quality
from edge.track import Decision, Observation, Track
from edge.watchlist.keys import key_id
from edge.watchlist.store import WatchlistStore
from tests.broker import Broker, free_port
from tests.mqtt_helpers import Subscriber
from tools.synthetic import SPACE, random_entries, signed_bundle

ACK = {"schema": "edge.watchlist-ack/1", "watchlist": "fleet", "version": 1, "previous_version": None, "outcome": "applied",
       "reason": "applied", "message": "applied", "ts": "2026-12-03T09:00:00.000Z"}  # fmt: skip


def make_daemon(tmp: Path, port: int, key: Ed25519PrivateKey, *, mqtt: bool = True) -> Daemon:
    data = tmp / "data"
    store = WatchlistStore(connect(data / "edge.db"))
    assert store.apply(signed_bundle(random_entries(5), key, version=1), {key_id(key.public_key()): key.public_key()},
                       embedding_space=SPACE).ok  # fmt: skip
    store.conn.close()
    cfg = tmp / "edge.toml"
    cfg.write_text(
        f'device_id = "pole-9"\ndata_dir = "{data}"\n'
        f'[[sources]]\ncamera = "gate"\nurl = "{tmp / "none.avi"}"\n'
        f'[mqtt]\nenabled = {str(mqtt).lower()}\nhost = "127.0.0.1"\nport = {port}\n'
        '[recognition]\naccelerator = "cpu"\n[watchlist]\nname = "fleet"\n'
    )
    return Daemon(load_settings(cfg))


def decision(matcher: Matcher, entry_id: str, n: int) -> Decision:
    match = Match(entry_id, None, 0.9, 0.2, None, watchlist=matcher.ref)
    obs = Observation(np.array([10.0, 10.0, 80.0, 80.0]), Quality(80.0, 100.0, 0.0, 0.9), match, 0.5, n, float(n), time.time())
    return Decision(Track(f"gate-{n}", "gate", obs, obs), entry_id, obs, 3)


def test_hits_made_while_another_connection_holds_the_write_lock_are_kept_and_delivered_after(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    with Broker(tmp_path) as broker:
        sub = Subscriber(broker.port, ["edge/v1/pole-9/hits", "edge/v1/pole-9/watchlist/ack"]).connect()
        d = make_daemon(tmp_path, broker.port, key)
        d.publisher.start()
        try:
            matcher = d.holder.matcher
            assert matcher is not None
            locker = sqlite3.connect(tmp_path / "data" / "edge.db", isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # a long writer elsewhere: `database is locked` after the busy timeout
            d._emit([decision(matcher, f"e000000{i}", i) for i in range(3)])  # one frame, three hits: none dropped
            d._queue_ack(dict(ACK))  # the sync thread's ack, stored the same way
            st = d.status()
            assert st["state"] == "degraded" and st["storage"]["state"] == "error" and st["storage"]["held_in_memory"] == 4
            assert "storage error" in st["last_error"]
            locker.execute("COMMIT")
            d._next_storage_retry = 0.0
            d.retry_unstored()
            assert d.status()["storage"] == {"state": "ok", "held_in_memory": 0, "lost_over_memory_bound": 0}
            hits = sub.wait_for("/hits", 3, timeout=20)
            assert sorted(h["entry_id"] for h in hits) == ["e0000000", "e0000001", "e0000002"]
            [ack] = sub.wait_for("/ack", 1, timeout=20)
            assert ack["device_id"] == "pole-9"
        finally:
            d.publisher.stop()
            sub.disconnect()


def test_a_hit_carries_the_version_that_scored_it_and_votes_for_removed_entries_are_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    d = make_daemon(tmp_path, free_port(), key, mqtt=False)
    v1 = d.holder.matcher
    assert v1 is not None and v1.version == 1
    # v2 drops e0000000 (and keeps e0000001): built from the store after a real apply.
    store = WatchlistStore(connect(tmp_path / "data" / "edge.db"))
    kept = random_entries(5)[1:]
    assert store.apply(signed_bundle(kept, key, version=2), {key_id(key.public_key()): key.public_key()},
                       embedding_space=SPACE).ok  # fmt: skip
    v2 = Matcher.from_store(store, "fleet")
    assert v2 is not None and v2.contains("e0000001") and not v2.contains("e0000000")
    # A track voted for e0000000 under v1 and is still open when v2 is swapped in.
    obs = decision(v1, "e0000000", 1).best
    open_track = Track("gate-open", "gate", obs, obs, votes={"e0000000": [obs]})
    d.tracker.tracks["gate"] = [open_track]
    d.holder.swap(v2)
    # This frame's decisions were scored by v1 (a frame in flight during the swap).
    d.report.json_hits = True  # `edge run --json`: each hit as a JSON line on stdout
    d._emit([decision(v1, "e0000000", 2), decision(v1, "e0000001", 3)])
    assert open_track.votes == {}, "the vote for an entry v2 removed is gone"
    [hit] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert hit["entry_id"] == "e0000001", "no hit for the removed entry"
    assert hit["watchlist"]["version"] == 1 and hit["watchlist"]["sha256"] == v1.sha256, "stamped with the scoring version"


def test_the_retention_purge_waits_out_a_busy_database_instead_of_stopping_the_daemon(tmp_path: Path) -> None:
    d = make_daemon(tmp_path, free_port(), Ed25519PrivateKey.generate(), mqtt=False)
    locker = sqlite3.connect(tmp_path / "data" / "edge.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # `edge watchlist apply` or a long transaction elsewhere
    for conn in (d.store.conn, d.outbox.conn):
        conn.execute("PRAGMA busy_timeout = 200")  # the shipped wait is 30 s; the outcome is the same
    try:
        assert d._purge() is False  # postponed (the loop retries in a minute), not raised
    finally:
        locker.execute("COMMIT")
        locker.close()
    assert d._purge() is True
