"""Checking device messages before they are stored: topic, JSON, schema, and the topic's device id.

A malformed message becomes a :class:`Rejection` with the reason (kept aside, never dropped
silently, never crashing a worker); a good one a :class:`Message` for ``Store.write``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any

import fastjsonschema
import jsonschema

from edge import schemas
from edge.central.store import IngestResult, Message, Rejection, Store
from edge.central.store.records import Kind
from edge.central.store.store import now
from edge.errors import InputFormatError
from edge.untrusted import load_json

log = logging.getLogger(__name__)

# topic suffix -> (kind, schema id)
KINDS: dict[str, tuple[Kind, str]] = {
    "hits": ("hit", "edge.hit/1"),
    "status": ("status", "edge.status/1"),
    "watchlist/ack": ("ack", "edge.watchlist-ack/1"),
    "audit": ("audit", "edge.audit/1"),
}
TOPICS = [f"edge/v1/+/{suffix}" for suffix in KINDS]
# Ids are checked here with fullmatch as well as in the schemas: JSON Schema ``pattern`` is a
# search, and Python's ``$`` also matches before a final newline ("pole-1\n" would pass).
DEVICE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ID_FIELDS = {
    "hit": {"event_id": re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "camera": DEVICE_ID,
            "entry_id": re.compile(r"[A-Za-z0-9_.:@-]{1,128}")},
}  # fmt: skip


@cache
def fast_validator(name: str) -> Callable[[Any], Any]:
    """The schema compiled to Python by fastjsonschema: about 15 times faster than jsonschema, which
    capped an ingest worker at ~2,000 messages/s of CPU. Only used to accept; a refusal's reason
    comes from the reference validator (``edge.schemas``)."""
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        schemas.load(name), formats={"uuid": ID_FIELDS["hit"]["event_id"].pattern}
    )
    return compiled


def _schema_problem(expected: str, doc: dict[str, Any]) -> str | None:
    name = schemas.BY_SCHEMA_ID[expected]
    try:
        fast_validator(name)(doc)
        return None
    except fastjsonschema.JsonSchemaValueException as fast:
        try:
            schemas.validator(name).validate(doc)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
            return f"{expected} invalid at {where}: {exc.message[:300]}"
        # Stricter than the reference (an integer written as 1.0): still refused.
        return f"{expected} invalid: {str(fast.message)[:300]}"


def subscriptions(group: str | None) -> list[str]:
    """The topic filters a worker subscribes to; with ``group``, MQTT v5 shared subscriptions
    (``$share/GROUP/…``): the broker hands each message to one worker of the group."""
    return [f"$share/{group}/{t}" for t in TOPICS] if group else list(TOPICS)


def parse(topic: str, payload: bytes, received_at: datetime | None = None, *, retained: bool = False) -> Message | Rejection:
    received_at = received_at or now()

    def reject(reason: str) -> Rejection:
        log.warning("rejected a message on %s: %s", topic, reason)
        return Rejection(topic, reason, payload[:200].decode("utf-8", "replace"), received_at)

    parts = topic.split("/")
    if len(parts) < 4 or parts[:2] != ["edge", "v1"]:
        return reject("not an edge/v1 device topic")
    device = parts[2]
    if not DEVICE_ID.fullmatch(device):
        return reject("the topic's device id is not a valid device id")
    kind_schema = KINDS.get("/".join(parts[3:]))
    if kind_schema is None:
        return reject("not a topic edge alerts stores")
    kind, expected = kind_schema
    if b"\\u0000" in payload:
        return reject("a string holds a NUL character")  # PostgreSQL text cannot store it
    try:
        doc = load_json(payload, storable=True)
    except InputFormatError as exc:
        return reject(str(exc))
    if not isinstance(doc, dict):
        return reject("not a JSON object")
    if doc.get("schema") != expected:
        return reject(f"schema {str(doc.get('schema'))[:80]!r} does not belong on this topic")
    try:
        problem = _schema_problem(expected, doc)
    except RecursionError:
        return reject(f"{expected} nested too deeply")
    if problem is not None:
        return reject(problem)
    if doc.get("device_id") != device:
        return reject(f"device_id {str(doc.get('device_id'))[:80]!r} published on {device[:80]}'s topic")
    for key, pattern in ID_FIELDS.get(kind, {}).items():
        if not pattern.fullmatch(doc[key]):
            return reject(f"{expected}: {key} is not a valid id")
    wl_name = doc["watchlist"]["name"] if kind == "hit" else None
    if wl_name is not None and not DEVICE_ID.fullmatch(wl_name):
        return reject(f"{expected}: watchlist name is not a valid name")
    for key in ("version", "previous_version", "seq", "first_seq", "count"):
        value = doc.get(key, 0)
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            return reject(f"{expected}: {key} is out of range")
    wl = doc.get("watchlist")
    if isinstance(wl, dict) and isinstance(wl.get("version"), int) and not 0 <= wl["version"] < 2**63:
        return reject(f"{expected}: watchlist version is out of range")
    ob = doc.get("outbox")
    if isinstance(ob, dict) and any(isinstance(v, int) and v >= 2**63 for v in ob.values()):
        return reject(f"{expected}: an outbox count is out of range")
    return Message(kind, device, doc, received_at, retained)


def ingest(store: Store, topic: str, payload: bytes, *, retained: bool = False) -> IngestResult:
    """Check and store one message (its own transaction); workers batch with ``Store.write`` instead."""
    return store.write([parse(topic, payload, retained=retained)])[0]
