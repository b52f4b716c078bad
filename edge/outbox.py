"""The outbox: hits are committed to SQLite before they are sent, and deleted only when the broker acknowledged them.

So a broker outage, a crash (SIGKILL) or a power cut loses no hit: whatever is in the
table is sent (again) after the next connect. ``event_id`` is the primary key and the
subscribers' de-duplication key, so a hit produced twice (a recording replayed after a
crash) is stored and sent once. The table is bounded by rows and age; anything dropped
is counted, audited and shown in the status.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import audit
from edge.db import connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pending:
    event_id: str
    topic: str
    payload: bytes
    kind: str
    created: float


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    oldest_age_s: float | None
    dropped: int
    failed_publishes: int


class Outbox:
    def __init__(self, path: Path | str, *, max_rows: int, max_age_s: float) -> None:
        self.conn: sqlite3.Connection = connect(path)
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self._lock = threading.Lock()

    def add(
        self,
        event_id: str,
        topic: str,
        payload: bytes,
        *,
        kind: str,
        audit_detail: dict[str, Any] | None = None,
        watchlist: str | None = None,
        version: int | None = None,
    ) -> bool:
        """Commit a message (and its audit record) durably; False when this event_id is already stored or sent."""
        with self._lock:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                fresh = c.execute("INSERT OR IGNORE INTO events (event_id, created) VALUES (?, ?)", (event_id, now)).rowcount == 1
                if fresh:
                    c.execute(
                        "INSERT INTO outbox (event_id, topic, payload, kind, created) VALUES (?, ?, ?, ?, ?)",
                        (event_id, topic, payload, kind, now),
                    )
                    audit.append(
                        c,
                        kind,
                        "stored",
                        watchlist=watchlist,
                        version=version,
                        detail={"event_id": event_id, **(audit_detail or {})},
                    )
                self._enforce_bounds(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return fresh

    def _enforce_bounds(self, c: sqlite3.Connection) -> None:
        cutoff = time.time() - self.max_age_s
        old = c.execute("DELETE FROM outbox WHERE created < ?", (cutoff,)).rowcount
        excess = c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] - self.max_rows
        over = 0
        if excess > 0:
            over = c.execute(
                "DELETE FROM outbox WHERE event_id IN (SELECT event_id FROM outbox ORDER BY created LIMIT ?)", (excess,)
            ).rowcount
        dropped = old + over
        if dropped:
            c.execute(
                "INSERT INTO counters (name, value) VALUES ('outbox_dropped', ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )
            audit.append(c, "outbox.dropped", "dropped", detail={"too_old": old, "over_limit": over})
            log.error("outbox full: dropped %d undelivered messages (%d too old, %d over the row limit)", dropped, old, over)

    def pending(self, limit: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[Pending]:
        with self._lock:
            rows = self.conn.execute(
                "SELECT event_id, topic, payload, kind, created FROM outbox ORDER BY created LIMIT ?", (limit + len(exclude),)
            ).fetchall()
        return [Pending(*r) for r in rows if r[0] not in exclude][:limit]

    def delivered(self, event_id: str) -> None:
        with self._lock:
            self.conn.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))

    def failed(self, event_id: str, reason: str) -> None:
        with self._lock:
            self.conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE event_id = ?", (reason, event_id))

    def stats(self) -> OutboxStats:
        with self._lock:
            depth, oldest = self.conn.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
            dropped = self.conn.execute("SELECT value FROM counters WHERE name = 'outbox_dropped'").fetchone()
            failed = self.conn.execute("SELECT COUNT(*) FROM outbox WHERE attempts > 0").fetchone()[0]
        return OutboxStats(
            depth=int(depth),
            oldest_age_s=round(time.time() - oldest, 1) if oldest is not None else None,
            dropped=int(dropped[0]) if dropped else 0,
            failed_publishes=int(failed),
        )

    def purge_events(self, older_than_s: float) -> int:
        with self._lock:
            return int(self.conn.execute("DELETE FROM events WHERE created < ?", (time.time() - older_than_s,)).rowcount)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
