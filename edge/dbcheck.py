"""Start-up check of the device database: a corrupt file is moved aside, reported, and rebuilt.

SQLite's ``PRAGMA integrity_check`` finds a truncated file or broken pages but not a flipped
byte inside a stored value, so the watchlist entries' own content hashes are checked too.
When either fails, the undelivered outbox rows that can still be read are salvaged row by
row, the file (with its WAL) is renamed ``edge.db.corrupt-<UTC time>`` for inspection, and a
fresh database is created holding the salvaged rows and an audit record of what happened.
The watchlist comes back with the next bundle (the current one is retained on the broker).
Rows that could not be read are lost; the report says how many failed to read and whether
the scan of the outbox was complete, so the status can say so rather than promise.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge import audit
from edge.db import connect, immediate
from edge.watchlist.store import WatchlistStore

log = logging.getLogger(__name__)

OUTBOX_COLUMNS = "event_id, topic, payload, kind, created, attempts, last_error"
BATCH = 256


@dataclass
class DbCheckReport:
    path: str
    ok: bool = True
    problem: str | None = None
    moved_aside_to: str | None = None
    outbox_salvaged: int = 0
    outbox_unreadable: int = 0
    outbox_scan_complete: bool = True  # False: rows may have been lost without being counted
    events_salvaged: int = 0
    checked_at: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def as_status(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.ok:
            return f"database {self.path} passed its integrity and content checks"
        lost = f"{self.outbox_unreadable} unreadable" + ("" if self.outbox_scan_complete else ", more may be lost")
        return (
            f"database {self.path} was corrupt ({self.problem}); moved aside to {self.moved_aside_to}; "
            f"{self.outbox_salvaged} undelivered messages salvaged, {lost}; the watchlist is rebuilt from the next bundle"
        )


def find_problem(path: Path) -> str | None:
    """What is wrong with the database at ``path``, or None when it passes both checks."""
    try:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        return f"cannot open: {exc}"
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
        if rows != ["ok"]:
            return "integrity_check: " + "; ".join(str(r) for r in rows[:5])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "entries" in tables:
            count, ids = WatchlistStore(conn).damaged_entries()
            if count:
                return f"{count} watchlist entries fail their content hash (first: {', '.join(ids[:5])})"
    except (sqlite3.Error, ValueError, TypeError) as exc:  # a damaged value can fail to hash, not only to read
        return f"check failed: {exc}"
    finally:
        conn.close()
    return None


def _read_rows(conn: sqlite3.Connection, table: str, columns: str) -> tuple[list[tuple[Any, ...]], int, bool]:
    """Every row of ``table`` that can still be read, by rowid ranges and then one by one around bad pages."""
    try:
        lo, hi = conn.execute(f"SELECT MIN(rowid), MAX(rowid) FROM {table}").fetchone()
    except sqlite3.Error:
        return [], 0, False
    if lo is None:
        return [], 0, True
    rows: list[tuple[Any, ...]] = []
    unreadable = 0
    for start in range(int(lo), int(hi) + 1, BATCH):
        try:
            rows += conn.execute(
                f"SELECT {columns} FROM {table} WHERE rowid BETWEEN ? AND ?", (start, start + BATCH - 1)
            ).fetchall()
            continue
        except sqlite3.Error:
            pass
        for rid in range(start, min(start + BATCH, int(hi) + 1)):
            try:
                rows += conn.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rid,)).fetchall()
            except sqlite3.Error:
                unreadable += 1
    return rows, unreadable, unreadable == 0


def salvage(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, bool]:
    """(outbox rows, events rows, unreadable outbox rows, outbox scan complete) from a damaged database."""
    try:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    except sqlite3.Error:
        return [], [], 0, False
    try:
        outbox, unreadable, complete = _read_rows(conn, "outbox", OUTBOX_COLUMNS)
        events, _, _ = _read_rows(conn, "events", "event_id, created")
    finally:
        conn.close()
    # A damaged row may carry the wrong types; only well-formed ones can be sent again.
    good = [r for r in outbox if isinstance(r[0], str) and isinstance(r[1], str) and isinstance(r[2], bytes)]
    return good, [e for e in events if isinstance(e[0], str)], unreadable + len(outbox) - len(good), complete


def check_and_recover(path: Path) -> DbCheckReport:
    """Check the database before anything opens it; if it is damaged, salvage, move aside and start afresh."""
    report = DbCheckReport(str(path))
    if not path.exists():
        return report
    problem = find_problem(path)
    if problem is None:
        return report
    log.error("database %s is damaged: %s", path, problem)
    outbox, events, unreadable, complete = salvage(path)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))
    report.ok = False
    report.problem = problem
    report.moved_aside_to = str(aside)
    report.outbox_unreadable = unreadable
    report.outbox_scan_complete = complete
    conn = connect(path)
    try:
        with immediate(conn):
            report.outbox_salvaged = sum(
                conn.execute(f"INSERT OR IGNORE INTO outbox ({OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", r).rowcount
                for r in outbox
            )
            report.events_salvaged = sum(
                conn.execute("INSERT OR IGNORE INTO events (event_id, created) VALUES (?, ?)", e).rowcount for e in events
            )
            for r in outbox:  # a salvaged message is known, even if its event row was lost
                conn.execute("INSERT OR IGNORE INTO events (event_id, created) VALUES (?, ?)", (r[0], r[4]))
            detail = {k: v for k, v in report.as_status().items() if k not in ("ok", "path", "checked_at")}
            audit.append(conn, "database.corrupt", "rebuilt", detail=detail)
    finally:
        conn.close()
    log.error("%s", report.summary())
    return report
