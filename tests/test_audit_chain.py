"""The audit chain's tamper evidence against real SQLite files: verified at start, anchored by the heads the device
publishes, and a retention purge that cuts only a prefix and survives clock jumps."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge import audit
from edge.audit_anchor import AuditAnchor, compare_heads, head_message
from edge.db import connect
from edge.outbox import Outbox
from edge.schemas import load
from tests.broker import Broker
from tests.mqtt_helpers import Subscriber
from tests.test_daemon import finish, kit, start_daemon, write_config  # noqa: F401  (kit is a fixture)
from tests.test_hostile import DAY, FakeClock

T0 = 1_780_000_000.0  # 2026-05-28


def chain(tmp_path: Path, n: int = 20, start: float = T0) -> sqlite3.Connection:
    conn = connect(tmp_path / "edge.db")
    for i in range(n):
        audit.append(conn, "hit", "stored", watchlist="city", version=3, detail={"event_id": f"e{i}"}, at=start + i * 60)
    return conn


def published(conn: sqlite3.Connection) -> dict[str, Any]:
    msg = head_message("pole-7", audit.check_chain(conn))
    jsonschema.validate(msg, load("audit"))
    return msg


def tamper(path: Path, sql: str, *args: object) -> None:
    """Someone with the SD card: a separate connection, straight SQL."""
    with sqlite3.connect(path) as c:
        c.execute(sql, args)


def recompute_from(path: Path, first: int) -> None:
    """Re-hash every record from ``first`` on, so each one links to the one before: the chain looks intact again."""
    with sqlite3.connect(path) as c:
        prev = c.execute("SELECT hash FROM audit WHERE id < ? ORDER BY id DESC LIMIT 1", (first,)).fetchone()
        prev_hash = prev[0] if prev else audit.GENESIS
        rows = c.execute(
            "SELECT id, ts, kind, watchlist, watchlist_version, outcome, detail FROM audit WHERE id >= ? ORDER BY id", (first,)
        ).fetchall()
        for rid, ts, kind, wl, ver, outcome, detail in rows:
            h = audit.record_hash(prev_hash, ts, kind, wl, ver, outcome, detail)
            c.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?", (prev_hash, h, rid))
            prev_hash = h


def test_an_intact_chain_verifies_and_its_head_matches_the_schema(tmp_path: Path) -> None:
    conn = chain(tmp_path)
    check = audit.check_chain(conn)
    assert check.ok and check.problem is None
    msg = published(conn)
    assert (msg["seq"], msg["first_seq"], msg["count"], msg["first_prev"]) == (20, 1, 20, audit.GENESIS)
    assert not compare_heads(msg, published(conn))


def test_deleting_the_first_and_the_last_record_is_detected(tmp_path: Path) -> None:
    conn = chain(tmp_path)
    before = published(conn)
    tamper(tmp_path / "edge.db", "DELETE FROM audit WHERE id IN (1, 20)")
    check = audit.check_chain(conn)
    assert not check.ok and "records before 2 are missing" in str(check.problem), "on the device: the chain's start"
    after = published(conn)
    assert any("went back from sequence 20 to 19" in p for p in compare_heads(before, after)), "centrally: the head"
    assert AuditAnchor(conn, "pole-7").status()["ok"] is False, "the daemon reports it at start"


def test_editing_a_record_and_recomputing_the_chain_is_caught_by_the_published_head(tmp_path: Path) -> None:
    conn = chain(tmp_path)
    anchor = AuditAnchor(conn, "pole-7")  # the running daemon: verified at start
    before = published(conn)
    tamper(tmp_path / "edge.db", "UPDATE audit SET outcome = 'dropped' WHERE id = 5")
    assert audit.check_chain(conn).problem == "record 5 does not match its hash (edited)"
    recompute_from(tmp_path / "edge.db", 5)
    assert audit.check_chain(conn).ok, "recomputed: the chain alone cannot tell (it is not keyed)"
    after = published(conn)
    assert any("fork: sequence 21" in p for p in compare_heads(before, after)), "the central side can"
    sent: list[bytes] = []

    def send(_topic: str, payload: bytes) -> bool:
        sent.append(payload)
        return True

    anchor.tick(True, send)
    assert json.loads(sent[0])["chain_ok"] is False, "and the running daemon notices its verified head changed"
    assert "changed or vanished" in str(anchor.status()["problem"])


def test_deleting_the_newest_records_and_writing_on_is_a_fork_at_the_same_sequence(tmp_path: Path) -> None:
    conn = chain(tmp_path)
    before = published(conn)
    tamper(tmp_path / "edge.db", "DELETE FROM audit WHERE id >= 19")
    audit.append(conn, "hit", "stored", detail={"event_id": "other"})
    audit.append(conn, "hit", "stored", detail={"event_id": "other-2"})
    assert audit.check_chain(conn).ok
    assert any("fork" in p for p in compare_heads(before, published(conn)))


def test_a_purge_cuts_a_prefix_and_the_chain_still_verifies_from_the_cut(tmp_path: Path) -> None:
    conn = chain(tmp_path, n=10, start=T0)
    for i in range(10):
        audit.append(conn, "hit", "stored", detail={"event_id": f"late{i}"}, at=T0 + 40 * DAY + i)
    before = published(conn)
    assert audit.purge(conn, now=T0 + 45 * DAY, keep_s=30 * DAY, keep_newest=2) == 10
    assert audit.records(conn)[0].id == 11
    assert audit.records(conn, "audit.purged")[-1].detail["through_seq"] == 10
    assert audit.check_chain(conn).ok
    assert not compare_heads(before, published(conn)), "a purge is not tampering"
    tamper(tmp_path / "edge.db", "DELETE FROM audit WHERE id = 11")
    assert "last purge cut after 10" in str(audit.check_chain(conn).problem)


def test_a_backward_clock_jump_does_not_purge_records_from_the_middle(tmp_path: Path) -> None:
    conn = connect(tmp_path / "edge.db")
    # Run A, clock right: day 100.
    audit.append(conn, audit.STARTED, "intact", at=T0 + 100 * DAY)
    for i in range(5):
        audit.append(conn, "hit", "stored", detail={"n": i}, at=T0 + 100 * DAY + i)
    # Run B boots with the clock 95 days behind (a Pi without its saved time); NTP puts it right later.
    audit.append(conn, audit.STARTED, "intact", at=T0 + 5 * DAY)
    for i in range(5):
        audit.append(conn, "hit", "stored", detail={"n": 10 + i}, at=T0 + 5 * DAY + i)
    audit.append(conn, "clock.jump", "compensated", detail={"jump_s": 95 * DAY}, at=T0 + 100 * DAY + 60)
    audit.append(conn, "hit", "stored", detail={"n": 20}, at=T0 + 100 * DAY + 70)
    # A naive purge (stored time < now - 30 days) would delete the five records from the set-back days.
    assert audit.purge(conn, now=T0 + 101 * DAY, keep_s=30 * DAY, keep_newest=0) == 0
    assert audit.check_chain(conn).ok and len(audit.records(conn)) == 14


def test_a_forward_clock_jump_past_retention_does_not_empty_the_log(tmp_path: Path) -> None:
    clock = FakeClock()
    clock.wall = T0
    ob = Outbox(tmp_path / "edge.db", max_rows=1000, max_age_s=7 * DAY, clock=clock)
    for i in range(5):
        ob.note("hit", "stored", {"n": i})  # stamped now: T0-ish wall time in a real run
    clock.jump(400 * DAY)  # the wall clock leaps a year ahead while the daemon runs
    ob.check_clock()  # the daemon does this before purging: a `clock.jump` record with jump_s
    n = audit.purge(ob.conn, now=clock.time(), keep_s=30 * DAY, keep_newest=0)
    assert n == 0, "the jump is compensated: the records are minutes old, not a year"
    assert [r.kind for r in audit.records(ob.conn)] == ["hit"] * 5 + ["clock.jump"]


def test_an_unexplained_forward_jump_keeps_the_newest_records(tmp_path: Path) -> None:
    conn = chain(tmp_path, n=150)
    # Nothing recorded a jump (the device was off): everything looks a year old; the newest still stay.
    n = audit.purge(conn, now=T0 + 400 * DAY, keep_s=30 * DAY)
    assert n == 150 - audit.KEEP_NEWEST
    assert len(audit.records(conn)) == audit.KEEP_NEWEST + 1  # and the purge record
    assert audit.check_chain(conn).ok


@pytest.mark.parametrize("bad", ["not json", '{"jump_s": "x"}', '{"jump_s": 1e308}', '{"jump_s": -1e308}'])
def test_a_damaged_jump_record_does_not_stop_the_purge(tmp_path: Path, bad: str) -> None:
    conn = chain(tmp_path, n=5)
    audit.append(conn, "clock.jump", "compensated", detail={"jump_s": 0})
    tamper(tmp_path / "edge.db", "UPDATE audit SET detail = ? WHERE kind = 'clock.jump'", bad)
    audit.purge(conn, now=T0 + 400 * DAY, keep_s=30 * DAY)  # no exception


def run_until_head(cfg: Path, tmp_path: Path, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the daemon (its camera missing, so it keeps running) until it published an audit head; stop it."""
    sub = Subscriber(port, ["edge/v1/+/audit", "edge/v1/+/status"], client_id=f"test-{uuid.uuid4().hex}").connect()
    proc = start_daemon(cfg, tmp_path / "daemon.log")
    try:
        heads = sub.wait_for("/audit", 1, timeout=60)
        assert heads, (tmp_path / "daemon.log").read_text()
        statuses = sub.wait_for("/status", 1, timeout=10)
    finally:
        proc.terminate()
        finish(proc, 30)
        sub.disconnect()
    return heads[0], statuses[-1]


def test_the_daemon_verifies_the_chain_at_start_reports_it_and_publishes_its_head(
    kit: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    with Broker(tmp_path) as broker:
        cfg = write_config(kit, tmp_path, broker.port, url=str(tmp_path / "no-camera.avi"), stop_at_end=False)
        head, status = run_until_head(cfg, tmp_path, broker.port)
        jsonschema.validate(head, load("audit"))
        jsonschema.validate(status, load("status"))
        assert head["device_id"] == "pole-7" and head["chain_ok"] is True and head["seq"] >= 2
        assert status["audit"]["ok"] is True and status["audit"]["problem"] is None
        # Someone removes the oldest records (the watchlist's first application) from the card.
        tamper(tmp_path / "data" / "edge.db", "DELETE FROM audit WHERE id = 1")
        head2, status2 = run_until_head(cfg, tmp_path, broker.port)
    assert status2["audit"]["ok"] is False and "records before 2 are missing" in status2["audit"]["problem"]
    assert head2["chain_ok"] is False
    assert compare_heads(head, head2), "the central side flags the second head"
