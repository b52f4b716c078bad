"""The append-only, hash-chained audit log: every watchlist change and every hit.

Each record's hash covers its content and the previous record's hash, so an edited or
deleted record breaks the chain from that point on. Records are written inside the
caller's transaction, so a change and its audit record commit together or not at all.
No biometric data goes in here: ids, versions, outcomes and reasons only.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.db import immediate

GENESIS = "0" * 64


def _now() -> str:
    t = datetime.now(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


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
) -> str:
    """Append one record inside the caller's transaction, or in one of its own; returns its hash."""
    if not conn.in_transaction:
        # The chain read and the insert must not interleave with another connection's append.
        with immediate(conn):
            h = append(conn, kind, outcome, watchlist=watchlist, version=version, detail=detail)
        return h
    row = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev = row[0] if row else GENESIS
    ts = _now()
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


def purge_older_than(conn: sqlite3.Connection, cutoff_iso: str) -> int:
    """Delete whole records older than ``cutoff_iso`` (never edit one); the purge itself is audited."""
    with immediate(conn):
        n = conn.execute("DELETE FROM audit WHERE ts < ?", (cutoff_iso,)).rowcount
        if n:
            append(conn, "audit.purged", "purged", detail={"records": n, "older_than": cutoff_iso})
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
