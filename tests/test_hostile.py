"""Hostile conditions on the device: clock jumps, a full disk, a damaged database (real SQLite files, no mocks)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import audit
from edge.db import connect
from edge.dbcheck import check_and_recover
from edge.outbox import Outbox, StorageFullError
from edge.watchlist.keys import key_id
from edge.watchlist.store import WatchlistStore
from tools.synthetic import SPACE, random_entries, signed_bundle

HOUR = 3600.0
DAY = 86400.0


class FakeClock:
    """Wall and monotonic clocks the test moves: ``advance`` is time passing, ``jump`` is someone setting the date."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 5_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, s: float) -> None:
        self.wall += s
        self.mono += s

    def jump(self, s: float) -> None:
        self.wall += s


def add_hit(ob: Outbox, n: int = 0, size: int = 100) -> str:
    eid = str(uuid.uuid4())
    ob.add(eid, "edge/v1/d/hits", json.dumps({"n": n, "pad": "x" * size}).encode(), kind="hit")
    return eid


# --- clock jumps -----------------------------------------------------------------------------------


def test_a_forward_clock_jump_of_a_day_drops_no_hit_and_real_age_still_bounds_the_outbox(tmp_path: Path) -> None:
    clock = FakeClock()
    ob = Outbox(tmp_path / "edge.db", max_rows=1000, max_age_s=HOUR, clock=clock)
    first = [add_hit(ob, i) for i in range(5)]
    clock.advance(60)
    clock.jump(DAY)  # NTP corrects a Pi that booted at its last saved time
    add_hit(ob, 99)
    stats = ob.stats()
    assert stats.depth == 6 and stats.dropped == 0, "the jump made no hit look a day old"
    assert stats.oldest_age_s == pytest.approx(60, abs=1)
    assert ob.clock_jumps == 1 and ob.last_clock_jump_s == pytest.approx(DAY)
    [rec] = audit.records(ob.conn, "clock.jump")
    assert rec.detail["outbox_rows_shifted"] == 5
    clock.advance(2 * HOUR)  # an hour-bound outbox really held for two hours: the bound applies (and says so)
    add_hit(ob, 100)
    assert {p.event_id for p in ob.pending(100)}.isdisjoint(first)
    assert ob.stats().dropped == 6
    assert audit.records(ob.conn, "outbox.dropped")[-1].detail["too_old"] == 6


def test_a_backward_clock_jump_keeps_ages_positive_and_the_send_order(tmp_path: Path) -> None:
    clock = FakeClock()
    ob = Outbox(tmp_path / "edge.db", max_rows=1000, max_age_s=HOUR, clock=clock)
    a = add_hit(ob, 1)
    clock.advance(10)
    clock.jump(-DAY)
    b = add_hit(ob, 2)
    assert [p.event_id for p in ob.pending(10)] == [a, b], "the older hit still goes first"
    assert ob.stats().oldest_age_s == pytest.approx(10, abs=1)


def test_slewing_within_the_tolerance_is_not_a_jump(tmp_path: Path) -> None:
    clock = FakeClock()
    ob = Outbox(tmp_path / "edge.db", max_rows=1000, max_age_s=HOUR, clock=clock)
    add_hit(ob)
    clock.jump(2.5)
    add_hit(ob)
    assert ob.clock_jumps == 0 and not audit.records(ob.conn, "clock.jump")


# --- disk full -------------------------------------------------------------------------------------


def fill_up(ob: Outbox) -> tuple[list[str], StorageFullError]:
    """Cap the database a few pages above its size (a real SQLite limit: SQLITE_FULL) and add hits until it refuses."""
    pages = ob.conn.execute("PRAGMA page_count").fetchone()[0]
    ob.conn.execute(f"PRAGMA max_page_count = {pages + 40}")
    stored: list[str] = []
    for i in range(10_000):
        try:
            stored.append(add_hit(ob, i, size=2000))
        except StorageFullError as exc:
            return stored, exc
    raise AssertionError("the capped database never filled up")


def test_a_full_disk_refuses_the_new_hit_clearly_and_keeps_every_committed_one(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "edge.db", max_rows=100_000, max_age_s=DAY)
    stored, exc = fill_up(ob)
    assert stored and "full" in str(exc)
    assert {p.event_id for p in ob.pending(10_000)} == set(stored), "nothing committed was lost or half-written"
    for eid in stored[:4]:
        ob.delivered(eid)  # delivery frees room: storing works again without a restart
    add_hit(ob, -1, size=2000)
    assert ob.stats().depth == len(stored) - 4 + 1


def test_the_daemon_holds_hits_in_memory_while_the_disk_is_full_and_reports_it(tmp_path: Path) -> None:
    from edge.config import load_settings
    from edge.daemon import Daemon

    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'device_id = "pole-9"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[[sources]]\ncamera = "gate"\nurl = "{tmp_path / "none.avi"}"\n[mqtt]\nenabled = false\n'
        '[recognition]\naccelerator = "cpu"\n'
    )
    d = Daemon(load_settings(cfg))
    _, _ = fill_up(d.outbox)
    for i in range(5):
        assert d._store(f"held-{i}", "edge/v1/pole-9/hits", b'{"x": "' + b"y" * 2000 + b'"}', {"kind": "hit"})
    st = d.status()
    assert st["state"] == "degraded" and st["storage"] == {"state": "full", "held_in_memory": 5, "lost_over_memory_bound": 0}
    assert st["last_error"].startswith("disk full")
    d.outbox.conn.execute("PRAGMA max_page_count = 1000000")  # space freed
    d.retry_unstored()
    stored = d.outbox.conn.execute("SELECT COUNT(*) FROM events WHERE event_id LIKE 'held-%'").fetchone()[0]
    assert stored == 5 and d.status()["storage"]["state"] == "ok" and d.status()["state"] == "online"
    assert audit.records(d.outbox.conn, "storage.full")[-1].outcome == "recovered"


# --- a damaged database ----------------------------------------------------------------------------


@pytest.fixture
def device_db(tmp_path: Path) -> Path:
    """A device database holding a 300-entry watchlist and 40 undelivered hits, checkpointed and closed."""
    path = tmp_path / "data" / "edge.db"
    key = Ed25519PrivateKey.generate()
    store = WatchlistStore(connect(path))
    assert store.apply(
        signed_bundle(random_entries(300), key), {key_id(key.public_key()): key.public_key()}, embedding_space=SPACE
    ).ok
    ob = Outbox(path, max_rows=1000, max_age_s=DAY)
    for i in range(40):
        add_hit(ob, i)
    ob.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ob.close()
    store.conn.close()
    return path


def test_a_healthy_database_passes_and_is_left_alone(device_db: Path) -> None:
    report = check_and_recover(device_db)
    assert report.ok and report.moved_aside_to is None
    assert sorted(p.name for p in device_db.parent.iterdir()) == ["edge.db", "edge.db.watchlist-state.json"]


def test_bit_rot_inside_a_stored_embedding_is_caught_by_the_content_hashes(device_db: Path) -> None:
    with sqlite3.connect(device_db) as c:
        blob = bytearray(c.execute("SELECT embeddings FROM entries WHERE entry_id = 'e0000007'").fetchone()[0])
        blob[5] ^= 0x40
        c.execute("UPDATE entries SET embeddings = ? WHERE entry_id = 'e0000007'", (bytes(blob),))
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "SQLite itself does not notice"
    report = check_and_recover(device_db)
    assert not report.ok and "content hash" in (report.problem or "") and "e0000007" in (report.problem or "")
    assert Path(report.moved_aside_to or "").is_file()
    assert report.outbox_salvaged == 40 and report.outbox_unreadable == 0 and report.outbox_scan_complete
    fresh = connect(device_db)
    assert WatchlistStore(fresh).current("fleet") is None, "the watchlist comes back with the next bundle"
    assert fresh.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 40
    [rec] = audit.records(fresh, "database.corrupt")
    assert rec.detail["outbox_salvaged"] == 40 and rec.detail["moved_aside_to"] == report.moved_aside_to
    assert audit.verify_chain(fresh) is None


def test_a_truncated_database_is_moved_aside_and_the_status_says_what_was_saved(device_db: Path) -> None:
    size = device_db.stat().st_size
    with device_db.open("r+b") as f:
        f.truncate(size * 2 // 3)
    report = check_and_recover(device_db)
    assert not report.ok and report.problem
    assert report.outbox_salvaged + report.outbox_unreadable <= 40
    assert "moved aside" in report.summary() and str(report.outbox_salvaged) in report.summary()
    fresh = connect(device_db)
    assert fresh.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert fresh.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == report.outbox_salvaged


def test_a_file_that_is_not_a_database_any_more_is_replaced_and_nothing_is_promised(device_db: Path) -> None:
    with device_db.open("r+b") as f:
        f.write(b"\x00garbage" * 16)
    report = check_and_recover(device_db)
    assert not report.ok and report.outbox_salvaged == 0 and not report.outbox_scan_complete
    assert "more may be lost" in report.summary()
    assert connect(device_db).execute("SELECT COUNT(*) FROM audit WHERE kind = 'database.corrupt'").fetchone()[0] == 1
