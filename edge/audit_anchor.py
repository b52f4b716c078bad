"""Anchoring the audit chain: the device publishes its head, the central side compares heads over time.

Anyone who can rewrite the device's database can delete records or edit one and recompute the
chain after it; they cannot take back a head the device already sent. The daemon verifies the
chain at start (reported in the status and audited), re-checks what was added since, and
publishes the head on ``edge/v1/{device_id}/audit`` (``edge.audit/1``: sequence numbers and
hashes only, no biometric data) once connected and every ``INTERVAL_S``. ``compare_heads`` is
the check the central store runs on two heads of one device: a sequence that goes back, or a
different hash at the same sequence (a fork), means records were removed or rewritten.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any

from edge import audit

log = logging.getLogger(__name__)

SCHEMA = "edge.audit/1"
INTERVAL_S = 300.0


def audit_topic(device_id: str) -> str:
    return f"edge/v1/{device_id}/audit"


def head_message(device_id: str, check: audit.ChainCheck, now: float | None = None) -> dict[str, Any]:
    h = check.head
    return {
        "schema": SCHEMA,
        "device_id": device_id,
        "ts": audit.iso_ms(now),
        "seq": h.seq,
        "head": h.head,
        "first_seq": h.first_seq,
        "first_prev": h.first_prev,
        "count": h.count,
        "chain_ok": check.ok,
    }


def compare_heads(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``new`` given ``old``, an earlier head of the same device (empty: consistent)."""
    if old["device_id"] != new["device_id"]:
        raise ValueError("heads of two different devices")
    problems = []
    if not new["chain_ok"]:
        problems.append("the device reports its own chain broken")
    if new["seq"] < old["seq"]:
        problems.append(f"the chain went back from sequence {old['seq']} to {new['seq']} (records deleted)")
    elif new["seq"] == old["seq"] and new["head"] != old["head"]:
        problems.append(f"fork: sequence {new['seq']} has another hash than before (records rewritten)")
    if new["first_seq"] < old["first_seq"]:
        problems.append(f"the oldest retained record moved back from {old['first_seq']} to {new['first_seq']}")
    elif new["first_seq"] == old["first_seq"] and new.get("first_prev") != old.get("first_prev"):
        problems.append(f"fork: the oldest retained record {new['first_seq']} links elsewhere than before")
    if new["count"] > max(0, new["seq"] - new["first_seq"] + 1):
        problems.append("more records than sequence numbers")
    return problems


class AuditAnchor:
    """Verifies the chain at start (and what was added since, before each publish) and publishes its head."""

    def __init__(self, conn: sqlite3.Connection, device_id: str, interval_s: float = INTERVAL_S) -> None:
        self.conn = conn
        self.device_id = device_id
        self.interval_s = interval_s
        started = time.monotonic()
        check = audit.check_chain(conn)
        took = time.monotonic() - started
        if check.ok:
            log.info("audit chain intact: %d records up to %d (checked in %.1fs)", check.head.count, check.head.seq, took)
        else:
            log.error("audit chain broken: %s", check.problem)
        # Also marks where this run starts: clock jumps recorded later correct only this run's records.
        detail = {"problem": check.problem, "seq": check.head.seq, "head": check.head.head, "records": check.head.count}
        try:
            audit.append(conn, audit.STARTED, "intact" if check.ok else "broken", detail=detail)
        except sqlite3.OperationalError as exc:  # a full or locked disk must not stop the device; the status says it
            log.error("could not audit the chain check: %s", exc)
        self.start_problem = check.problem
        self.last = audit.check_chain(conn, after=(check.head.seq, check.head.head)) if check.ok else check
        self._next_publish = 0.0
        self.published = 0

    def _recheck(self) -> audit.ChainCheck:
        if self.last.ok:
            self.last = audit.check_chain(self.conn, after=(self.last.head.seq, self.last.head.head))
            if not self.last.ok:
                log.error("audit chain broken: %s", self.last.problem)
        else:
            self.last = audit.ChainCheck(False, self.last.problem, audit.head(self.conn))
        return self.last

    def tick(self, connected: bool, publish: Callable[[str, bytes], bool], now: float | None = None) -> bool:
        """Publish the head when connected and due (at the first connection, then every interval); True if sent."""
        now = time.monotonic() if now is None else now
        if not connected or now < self._next_publish:
            return False
        try:
            check = self._recheck()
        except sqlite3.OperationalError as exc:  # database busy: try again at the next tick
            log.warning("audit head not published: %s", exc)
            return False
        if not publish(audit_topic(self.device_id), json.dumps(head_message(self.device_id, check)).encode()):
            return False
        self.published += 1
        self._next_publish = now + self.interval_s
        return True

    def status(self) -> dict[str, Any]:
        return {
            "ok": self.last.ok and self.start_problem is None,
            "problem": self.start_problem or self.last.problem,
            "seq": self.last.head.seq,
            "first_seq": self.last.head.first_seq,
            "heads_published": self.published,
        }
