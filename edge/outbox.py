"""The outbox: hits are committed to SQLite before they are sent, and deleted only when the broker acknowledged them.

So a broker outage, a crash (SIGKILL) or a power cut loses no hit: whatever is in the
table is sent (again) after the next connect. ``event_id`` is the primary key and the
subscribers' de-duplication key, so a hit produced twice (a recording replayed after a
crash) is stored and sent once. The table is bounded by rows and age; anything dropped
is counted, audited and shown in the status.

The age bound compares stored wall-clock times with the wall clock now, so a jump of the
wall clock (NTP correcting a Raspberry Pi that booted at its last saved time, an operator
setting the date) would make hits look days old and drop them, or never old. The outbox
therefore watches the wall clock against the monotonic clock and, when it jumped while the
daemon runs, shifts the stored times by the same amount (audited as ``clock.jump``): a row's
age is the time that really passed. A jump while the daemon was stopped cannot be seen; the
row bound still holds and anything dropped is audited.

A full disk (SQLITE_FULL) on ``add`` raises :class:`StorageFullError`, any other SQLite error
(``database is locked`` after the busy timeout, an I/O error) :class:`StorageError`; either way
every row already committed stays in place, and the caller keeps the message and retries.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import audit
from edge.clock import SYSTEM_CLOCK, Clock, JumpDetector
from edge.db import connect, immediate
from edge.errors import EdgeError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 2000


class StorageError(EdgeError):
    """The message could not be committed (a locked database, an I/O error): nothing of it was stored."""


class StorageFullError(StorageError):
    """The database could not grow (disk or quota full, SQLITE_FULL): the message was not stored."""


def is_disk_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)


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
    def __init__(self, path: Path | str, *, max_rows: int, max_age_s: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self.conn: sqlite3.Connection = connect(path)
        # Short: while another writer holds the database, a message is held in memory and retried rather than
        # stalling the pipeline for connect()'s 30 s (edge.daemon).
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.clock = clock
        self.clock_jumps = 0
        self.last_clock_jump_s: float | None = None
        self._jumps = JumpDetector(clock)
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
        """Commit a message (and its audit record) durably; False when this event_id is already stored or sent.

        Raises StorageFullError when the disk is full, StorageError on any other database error;
        nothing of this message is stored then.
        """
        with self._lock:
            c = self.conn
            try:
                return self._add(c, event_id, topic, payload, kind, audit_detail, watchlist, version)
            except sqlite3.Error as exc:
                if is_disk_full(exc):
                    raise StorageFullError(f"outbox: cannot store {kind} {event_id}: {exc}") from exc
                raise StorageError(f"outbox: cannot store {kind} {event_id}: {exc}") from exc

    def _add(
        self,
        c: sqlite3.Connection,
        event_id: str,
        topic: str,
        payload: bytes,
        kind: str,
        audit_detail: dict[str, Any] | None,
        watchlist: str | None,
        version: int | None,
    ) -> bool:
        with immediate(c):
            jump = self._rebase_after_jump(c)
            now = self.clock.time()
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
        self._jump_committed(jump)
        return fresh

    def _rebase_after_jump(self, c: sqlite3.Connection) -> float:
        """Inside a transaction: shift stored wall times by a jump of the wall clock seen since the last look."""
        delta = self._jumps.jump()
        if not delta:
            return 0.0
        moved = c.execute("UPDATE outbox SET created = created + ?", (delta,)).rowcount
        c.execute("UPDATE events SET created = created + ?", (delta,))
        audit.append(c, "clock.jump", "compensated", detail={"jump_s": round(delta, 3), "outbox_rows_shifted": moved})
        log.warning(
            "wall clock jumped %+.0fs; %d undelivered messages keep their real age (times shifted by the same amount)",
            delta, moved,
        )  # fmt: skip
        return delta

    def _jump_committed(self, delta: float) -> None:
        if delta:
            self._jumps.accept(delta)
            self.clock_jumps += 1
            self.last_clock_jump_s = round(delta, 1)

    def note(self, kind: str, outcome: str, detail: dict[str, Any]) -> None:
        """Append an audit record through this outbox's connection (its lock keeps other threads out)."""
        with self._lock:
            audit.append(self.conn, kind, outcome, detail=detail)

    def check_clock(self) -> None:
        """Compensate a wall-clock jump now (also done on every add), so ages and the status stay right."""
        if not self._jumps.jump():
            return  # the usual case: no write transaction
        with self._lock:
            c = self.conn
            try:
                with immediate(c):
                    jump = self._rebase_after_jump(c)
                self._jump_committed(jump)
            except sqlite3.OperationalError as exc:
                log.error("outbox: could not record a clock jump: %s", exc)

    def _enforce_bounds(self, c: sqlite3.Connection) -> None:
        cutoff = self.clock.time() - self.max_age_s
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
        # Called from the MQTT thread: if the row cannot be deleted (disk full) it is sent again later and
        # the subscriber drops the duplicate by event_id; raising here would stop the network loop.
        with self._lock:
            try:
                self.conn.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
            except sqlite3.OperationalError as exc:
                log.error("outbox: could not mark %s delivered (%s); it will be sent again", event_id, exc)

    def failed(self, event_id: str, reason: str) -> None:
        with self._lock:
            try:
                self.conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE event_id = ?", (reason, event_id)
                )
            except sqlite3.OperationalError as exc:
                log.error("outbox: could not record the failed publish of %s (%s)", event_id, exc)

    def stats(self) -> OutboxStats:
        self.check_clock()
        with self._lock:
            depth, oldest = self.conn.execute("SELECT COUNT(*), MIN(created) FROM outbox").fetchone()
            dropped = self.conn.execute("SELECT value FROM counters WHERE name = 'outbox_dropped'").fetchone()
            failed = self.conn.execute("SELECT COUNT(*) FROM outbox WHERE attempts > 0").fetchone()[0]
        return OutboxStats(
            depth=int(depth),
            oldest_age_s=round(self.clock.time() - oldest, 1) if oldest is not None else None,
            dropped=int(dropped[0]) if dropped else 0,
            failed_publishes=int(failed),
        )

    def purge_events(self, older_than_s: float) -> int:
        self.check_clock()
        with self._lock:
            return int(self.conn.execute("DELETE FROM events WHERE created < ?", (self.clock.time() - older_than_s,)).rowcount)

    def close(self) -> None:
        with self._lock:
            self.conn.close()
