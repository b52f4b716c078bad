"""The device's SQLite database: one file (WAL) holding the watchlist, the audit log and the outbox.

One file so that a change and its audit record commit in the same transaction. Schema
changes are numbered migrations applied at open (``PRAGMA user_version``), written with
sqlite-utils; crash-critical paths use plain ``sqlite3`` transactions.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

log = logging.getLogger(__name__)


def _v1(db: sqlite_utils.Database) -> None:
    db.table("watchlists").create(
        {
            "name": str,
            "version": int,
            "sha256": str,
            "issued_at": str,
            "expires_at": str,
            "embedding_space": str,
            "dimension": int,
            "dtype": str,
            "entry_count": int,
            "embedding_count": int,
            "key_id": str,
            "applied_at": str,
        },
        pk="name",
    )
    db.table("entries").create(
        {
            "id": int,
            "watchlist": str,
            "entry_id": str,
            "label": str,
            "case_ref": str,
            "expires_at": str,
            "threshold": float,
            "n": int,
            "embeddings": bytes,
            "sha256": str,
        },
        pk="id",
        not_null={"watchlist", "entry_id", "n", "embeddings", "sha256"},
    )
    db.table("entries").create_index(["watchlist", "entry_id"], unique=True)
    db.table("audit").create(
        {
            "id": int,
            "ts": str,
            "kind": str,
            "watchlist": str,
            "watchlist_version": int,
            "outcome": str,
            "detail": str,
            "prev_hash": str,
            "hash": str,
        },
        pk="id",
        not_null={"ts", "kind", "outcome", "detail", "prev_hash", "hash"},
    )


def _v2(db: sqlite_utils.Database) -> None:
    # Undelivered messages (hits, watchlist acks): a row is deleted only when the broker acknowledged it.
    db.table("outbox").create(
        {"event_id": str, "topic": str, "payload": bytes, "kind": str, "created": float, "attempts": int, "last_error": str},
        pk="event_id",
        not_null={"topic", "payload", "kind", "created"},
        defaults={"attempts": 0},
    )
    db.table("outbox").create_index(["created"])
    db.table("counters").create({"name": str, "value": int}, pk="name")
    # Every event id ever stored (purged with the retention): a hit produced again after a crash is not re-sent.
    db.table("events").create({"event_id": str, "created": float}, pk="event_id", not_null={"created"})


def _v3(db: sqlite_utils.Database) -> None:
    # A bundle is written under its own key in short transactions and then switched to in one small one,
    # so a 1M-entry apply never holds the write lock long enough to block hit storage (edge.watchlist.store).
    db.execute("ALTER TABLE watchlists ADD COLUMN entries_key TEXT")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (SQLITE_FULL): a second ROLLBACK would hide the real error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating and migrating as needed) the device database with crash-safe settings."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, migration in enumerate(MIGRATIONS, start=1):
        if version < number:
            with immediate(conn):
                migration(db)
                conn.execute(f"PRAGMA user_version={number}")
            log.info("database %s migrated to schema %d", path, number)
    return conn
