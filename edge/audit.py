"""The append-only, hash-chained audit log: every watchlist change and every hit.

Each record's hash covers its content and the previous record's hash, so an edited or
deleted record breaks the chain from that point on. Records are written inside the
caller's transaction, so a change and its audit record commit together or not at all.
No biometric data goes in here: ids, versions, outcomes and reasons only.

The record id is the chain's sequence number. Retention deletes only a prefix of the chain
(``purge``) and records where it cut (``through_seq``/``through_hash``), so the oldest
retained record must link to GENESIS or to that cut. Whoever can rewrite the database can
recompute the whole chain; what they cannot rewrite is the head the device already
published (``edge/audit_anchor.py``), which is why the chain is anchored centrally rather
than keyed: an HMAC key would sit on the same SD card as the database, readable by anyone
able to rewrite it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.db import immediate

GENESIS = "0" * 64


# Retention never deletes the newest records: an undetected forward clock jump cannot empty the chain.
KEEP_NEWEST = 100
# Written by each daemon at start: clock jumps recorded after it correct only the records of that run.
STARTED = "audit.verified"
LAST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z: the last time the ts format can hold


def iso_ms(t: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds (the audit ``ts`` format; it sorts as text)."""
    d = datetime.fromtimestamp(time.time() if t is None else t, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def record_hash(prev_hash: str, ts: str, kind: str, watchlist: str | None, version: int | None, outcome: str, detail: str) -> str:
    body = json.dumps([prev_hash, ts, kind, watchlist, version, outcome, detail], separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def append(
    conn: sqlite3.Connection,
    kind: str,
    outcome: str,
    *,
    watchlist: str | None = None,
    version: int | None = None,
    detail: dict[str, Any] | None = None,
    at: float | None = None,
) -> str:
    """Append one record inside the caller's transaction, or in one of its own; returns its hash.

    ``at``: the wall-clock time to stamp (default now).
    """
    if not conn.in_transaction:
        # The chain read and the insert must not interleave with another connection's append.
        with immediate(conn):
            h = append(conn, kind, outcome, watchlist=watchlist, version=version, detail=detail, at=at)
        return h
    row = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev = row[0] if row else GENESIS
    ts = iso_ms(at)
    text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
    h = record_hash(prev, ts, kind, watchlist, version, outcome, text)
    conn.execute(
        "INSERT INTO audit (ts, kind, watchlist, watchlist_version, outcome, detail, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (ts, kind, watchlist, version, outcome, text, prev, h),
    )
    return h


@dataclass(frozen=True)
class AuditRecord:
    id: int
    ts: str
    kind: str
    watchlist: str | None
    version: int | None
    outcome: str
    detail: dict[str, Any]


def records(conn: sqlite3.Connection, kind: str | None = None) -> list[AuditRecord]:
    sql = "SELECT id, ts, kind, watchlist, watchlist_version, outcome, detail FROM audit"
    args: tuple[Any, ...] = ()
    if kind is not None:
        sql += " WHERE kind = ?"
        args = (kind,)
    return [AuditRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in conn.execute(sql + " ORDER BY id", args)]


def _jump_offsets(conn: sqlite3.Connection) -> list[tuple[int, float]]:
    """(first id, seconds) pairs: from that id on (up to the next pair), add seconds to a record's ``ts``.

    A ``clock.jump`` record (written when the daemon sees the wall clock move against the
    monotonic clock) says how far the clock jumped; every earlier record of the same daemon
    run was stamped in the old frame, so its time in today's frame is ``ts`` plus the jumps
    recorded after it, up to the next start (records of an earlier run are not corrected by a
    later run's jumps: the device was off in between and nobody measured the clock).
    """
    events = conn.execute(f"SELECT id, kind, detail FROM audit WHERE kind IN ('clock.jump', '{STARTED}') ORDER BY id").fetchall()
    offsets: list[tuple[int, float]] = []
    running = 0.0
    for i in range(len(events) - 1, -1, -1):
        _, kind, detail = events[i]
        if kind == STARTED:
            running = 0.0
        else:
            try:
                jump = float(json.loads(detail).get("jump_s", 0.0))
            except (ValueError, TypeError, AttributeError):
                jump = 0.0
            running += jump if math.isfinite(jump) else 0.0
        offsets.append((int(events[i - 1][0]) if i > 0 else 0, running))
    offsets.reverse()
    offsets.append((int(events[-1][0]) if events else 0, 0.0))
    return offsets


def purge(conn: sqlite3.Connection, *, now: float, keep_s: float, keep_newest: int = KEEP_NEWEST) -> int:
    """Delete the oldest records whose age, corrected for clock jumps, exceeds ``keep_s``; audited.

    Only a prefix of the chain goes (up to the first record still young), never the newest
    ``keep_newest``, and the purge record names where it cut. So a backward jump cannot delete
    records from the middle (a false tamper alarm), and a forward jump past retention cannot
    empty the log.
    """
    cutoff = now - keep_s
    with immediate(conn):
        newest = conn.execute("SELECT MAX(id) FROM audit").fetchone()[0]
        if newest is None:
            return 0
        offsets = _jump_offsets(conn)
        first_young = newest + 1
        for k, (lo, offset) in enumerate(offsets):
            hi = offsets[k + 1][0] if k + 1 < len(offsets) else newest + 1
            # A record is young when ts + offset >= cutoff; ts is RFC 3339 text with fixed width, so compare as text.
            young_from = iso_ms(min(max(0.0, cutoff - offset), LAST_TIME))
            row = conn.execute("SELECT MIN(id) FROM audit WHERE id >= ? AND id < ? AND ts >= ?", (lo, hi, young_from)).fetchone()
            if row[0] is not None:
                first_young = int(row[0])
                break
        cut = min(first_young - 1, int(newest) - keep_newest)
        last = conn.execute("SELECT id, hash FROM audit WHERE id <= ? ORDER BY id DESC LIMIT 1", (cut,)).fetchone()
        if last is None:
            return 0
        n = conn.execute("DELETE FROM audit WHERE id <= ?", (last[0],)).rowcount
        append(
            conn,
            "audit.purged",
            "purged",
            detail={"records": n, "through_seq": last[0], "through_hash": last[1], "older_than": iso_ms(cutoff)},
            at=now,
        )
    return int(n)


def verify_chain(conn: sqlite3.Connection) -> int | None:
    """The id of the first record whose hash does not hold, or None when the chain is intact."""
    prev = None
    for rid, ts, kind, wl, ver, outcome, detail, prev_hash, h in conn.execute(
        "SELECT id, ts, kind, watchlist, watchlist_version, outcome, detail, prev_hash, hash FROM audit ORDER BY id"
    ):
        if prev is not None and prev_hash != prev:
            return int(rid)
        if record_hash(prev_hash, ts, kind, wl, ver, outcome, detail) != h:
            return int(rid)
        prev = h
    return None


@dataclass(frozen=True)
class Head:
    """Where the chain stands: what the device publishes on ``edge/v1/{device_id}/audit``."""

    seq: int  # id of the newest record (0: empty)
    head: str  # its hash (GENESIS: empty)
    first_seq: int  # id of the oldest retained record (0: empty)
    first_prev: str  # its prev_hash: where the retained chain joins what was purged
    count: int


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    problem: str | None
    head: Head


def head(conn: sqlite3.Connection) -> Head:
    newest = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    oldest = conn.execute("SELECT id, prev_hash FROM audit ORDER BY id LIMIT 1").fetchone()
    count = int(conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0])
    if newest is None:
        return Head(0, GENESIS, 0, GENESIS, 0)
    return Head(int(newest[0]), str(newest[1]), int(oldest[0]), str(oldest[1]), count)


def _start_problem(conn: sqlite3.Connection, first_seq: int, first_prev: str) -> str | None:
    """The oldest retained record must be the first ever, or follow the last purge's cut."""
    if first_seq == 1:
        return None if first_prev == GENESIS else "record 1 does not start the chain"
    row = conn.execute("SELECT detail FROM audit WHERE kind = 'audit.purged' ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return f"records before {first_seq} are missing and no purge removed them"
    cut = json.loads(row[0])
    if "through_seq" not in cut:
        return None  # purged before cuts were recorded: nothing to compare with
    if first_seq != cut["through_seq"] + 1 or first_prev != cut["through_hash"]:
        return f"the oldest record is {first_seq}, but the last purge cut after {cut['through_seq']} (records removed)"
    return None


def check_chain(conn: sqlite3.Connection, after: tuple[int, str] | None = None) -> ChainCheck:
    """Verify the retained chain: every hash, every link, and its start (GENESIS or the last purge's cut).

    ``after`` = (seq, hash) already verified by this process: then only newer records are read,
    after checking that record still holds that hash (a later edit or deletion of it is caught).
    """
    h = head(conn)
    prev: str | None = None
    start = 0
    if after is not None:
        row = conn.execute("SELECT hash FROM audit WHERE id = ?", (after[0],)).fetchone()
        if row is not None and row[0] == after[1]:
            start, prev = after
        elif row is not None or h.first_seq <= after[0] or h.seq < after[0]:
            return ChainCheck(False, f"record {after[0]} changed or vanished since it was verified", h)
        # else: purged since; check everything again
    if prev is None:
        problem = _start_problem(conn, h.first_seq, h.first_prev) if h.count else None
        if problem is not None:
            return ChainCheck(False, problem, h)
    for rid, ts, kind, wl, ver, outcome, detail, prev_hash, hsh in conn.execute(
        "SELECT id, ts, kind, watchlist, watchlist_version, outcome, detail, prev_hash, hash FROM audit WHERE id > ? ORDER BY id",
        (start,),
    ):
        if prev is not None and prev_hash != prev:
            return ChainCheck(False, f"record {rid} does not link to the record before it (records removed)", h)
        if record_hash(prev_hash, ts, kind, wl, ver, outcome, detail) != hsh:
            return ChainCheck(False, f"record {rid} does not match its hash (edited)", h)
        prev = hsh
    return ChainCheck(True, None, h)
