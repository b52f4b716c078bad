"""``edge alerts``: the reference central subscriber for a fleet's hits, health and watchlist acks.

Every message is validated against the JSON Schemas; a malformed one is kept aside with the
reason (never dropped silently, never crashing the subscriber). Hits are de-duplicated by
``event_id`` (QoS 1 is at-least-once) and stored in SQLite as candidates for human review;
a reviewer's decision is recorded with their name. The MQTT session is persistent, so hits
published while the console is down are delivered when it comes back.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import sqlite_utils

from edge import schemas
from edge.errors import EdgeError, InputFormatError
from edge.untrusted import load_json

log = logging.getLogger(__name__)

TOPICS = ["edge/v1/+/hits", "edge/v1/+/status", "edge/v1/+/watchlist/ack"]
REVIEW_STATES = ("candidate", "confirmed", "rejected")
EXPORT_FIELDS = [
    "event_id", "device_id", "camera", "entry_id", "score", "threshold", "first_seen", "last_seen",
    "watchlist_version", "review", "reviewed_by", "review_note",
]  # fmt: skip


@dataclass(frozen=True)
class IngestResult:
    kind: str  # hit, duplicate, status, ack, rejected
    detail: str = ""


class AlertStore:
    def __init__(self, path: Path | str) -> None:
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        db = sqlite_utils.Database(self.conn)
        if "hits" not in db.table_names():
            db.table("hits").create(
                {"event_id": str, "device_id": str, "camera": str, "entry_id": str, "score": float, "threshold": float,
                 "first_seen": str, "last_seen": str, "watchlist_version": int, "received_at": float, "payload": str,
                 "review": str, "reviewed_by": str, "reviewed_at": float, "review_note": str},
                pk="event_id", not_null={"device_id", "payload", "review"}, defaults={"review": "candidate"},
            )  # fmt: skip
            db.table("devices").create(
                {"device_id": str, "state": str, "last_status": str, "updated_at": float, "watchlist_version": int,
                 "outbox_depth": int},
                pk="device_id",
            )  # fmt: skip
            db.table("acks").create(
                {
                    "id": int,
                    "device_id": str,
                    "watchlist": str,
                    "version": int,
                    "outcome": str,
                    "reason": str,
                    "received_at": float,
                },
                pk="id",
            )
            db.table("rejected").create({"id": int, "topic": str, "reason": str, "received_at": float, "excerpt": str}, pk="id")
            db.table("counters").create({"name": str, "value": int}, pk="name")

    def _count(self, name: str) -> None:
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1", (name,)
        )

    def ingest(self, topic: str, payload: bytes) -> IngestResult:
        with self._lock:
            return self._ingest(topic, payload)

    def _reject(self, topic: str, payload: bytes, reason: str) -> IngestResult:
        self.conn.execute(
            "INSERT INTO rejected (topic, reason, received_at, excerpt) VALUES (?, ?, ?, ?)",
            (topic, reason[:500], time.time(), payload[:200].decode("utf-8", "replace")),
        )
        log.warning("rejected a message on %s: %s", topic, reason)
        return IngestResult("rejected", reason)

    def _ingest(self, topic: str, payload: bytes) -> IngestResult:
        parts = topic.split("/")
        if len(parts) < 4 or parts[:2] != ["edge", "v1"]:
            return self._reject(topic, payload, "not an edge/v1 device topic")
        device = parts[2]
        try:
            doc = load_json(payload)
        except InputFormatError as exc:
            return self._reject(topic, payload, str(exc))
        if not isinstance(doc, dict):
            return self._reject(topic, payload, "not a JSON object")
        expected = {"hits": "edge.hit/1", "status": "edge.status/1", "ack": "edge.watchlist-ack/1"}.get(parts[-1])
        if expected is None or doc.get("schema") != expected:
            return self._reject(topic, payload, f"schema {doc.get('schema')!r} does not belong on this topic")
        try:
            schemas.validator(schemas.BY_SCHEMA_ID[expected]).validate(doc)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
            return self._reject(topic, payload, f"{expected} invalid at {where}: {exc.message}")
        except RecursionError:
            return self._reject(topic, payload, f"{expected} nested too deeply")
        if doc.get("device_id") != device:
            return self._reject(topic, payload, f"device_id {doc.get('device_id')!r} published on {device}'s topic")
        try:
            return self._store(device, expected, doc)
        except OverflowError:  # an integer the schema allows but SQLite cannot hold (beyond 64 bits)
            return self._reject(topic, payload, f"{expected}: a number is out of range")

    def _store(self, device: str, expected: str, doc: dict[str, Any]) -> IngestResult:
        now = time.time()
        if expected == "edge.hit/1":
            cur = self.conn.execute(
                "INSERT OR IGNORE INTO hits (event_id, device_id, camera, entry_id, score, threshold, first_seen, last_seen, "
                "watchlist_version, received_at, payload, review) VALUES (?,?,?,?,?,?,?,?,?,?,?, 'candidate')",
                (doc["event_id"], device, doc["camera"], doc["entry_id"], doc["score"], doc["threshold"], doc["first_seen"],
                 doc["last_seen"], doc["watchlist"]["version"], now, json.dumps(doc)),
            )  # fmt: skip
            if cur.rowcount == 0:
                self._count("duplicates")
                return IngestResult("duplicate", doc["event_id"])
            return IngestResult("hit", doc["event_id"])
        if expected == "edge.status/1":
            wl = doc.get("watchlist") or {}
            ob = doc.get("outbox") or {}
            self.conn.execute(
                "INSERT OR REPLACE INTO devices (device_id, state, last_status, updated_at, watchlist_version, outbox_depth) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (device, doc["state"], json.dumps(doc), now, wl.get("version"), ob.get("depth")),
            )
            return IngestResult("status", doc["state"])
        self.conn.execute(
            "INSERT INTO acks (device_id, watchlist, version, outcome, reason, received_at) VALUES (?, ?, ?, ?, ?, ?)",
            (device, doc["watchlist"], doc["version"], doc["outcome"], doc["reason"], now),
        )
        return IngestResult("ack", f"{doc['outcome']} {doc['reason']}")

    def review(self, event_id: str, decision: str, by: str, note: str = "") -> None:
        if decision not in ("confirmed", "rejected"):
            raise EdgeError(f"review decision must be confirmed or rejected, not {decision!r}")
        if not by.strip():
            raise EdgeError("a review needs the reviewer's name (--by)")
        with self._lock:
            n = self.conn.execute(
                "UPDATE hits SET review = ?, reviewed_by = ?, reviewed_at = ?, review_note = ? WHERE event_id = ?",
                (decision, by, time.time(), note, event_id),
            ).rowcount
        if n == 0:
            raise EdgeError(f"no hit with event_id {event_id}")

    def hits(self, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "SELECT event_id, device_id, camera, entry_id, score, threshold, first_seen, last_seen, watchlist_version, " \
              "review, reviewed_by, review_note FROM hits ORDER BY first_seen DESC"  # fmt: skip
        if limit:
            sql += f" LIMIT {int(limit)}"
        cur = self.conn.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def devices(self) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT device_id, state, watchlist_version, outbox_depth, updated_at FROM devices ORDER BY device_id"
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        c = self.conn
        return {
            "hits": c.execute("SELECT COUNT(*) FROM hits").fetchone()[0],
            "duplicates": (c.execute("SELECT value FROM counters WHERE name = 'duplicates'").fetchone() or [0])[0],
            "rejected": c.execute("SELECT COUNT(*) FROM rejected").fetchone()[0],
            "acks": c.execute("SELECT COUNT(*) FROM acks").fetchone()[0],
            "devices": c.execute("SELECT COUNT(*) FROM devices").fetchone()[0],
        }

    def export(self, fmt: str) -> str:
        rows = self.hits()
        if fmt == "json":
            return json.dumps(rows, indent=2)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS)
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
