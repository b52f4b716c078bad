"""Device messages as the central side receives them (valid unless a test spoils them)."""

from __future__ import annotations

import json
import uuid
from typing import Any


def hit(device: str = "pole-1", entry: str = "case-1", event_id: str | None = None, first_seen: str = "2026-11-22T10:00:00.000Z",
        version: int = 3) -> dict[str, Any]:  # fmt: skip
    return {
        "schema": "edge.hit/1",
        "event_id": event_id or str(uuid.uuid4()),
        "device_id": device,
        "camera": "gate",
        "track_id": "gate-3-1",
        "first_seen": first_seen,
        "last_seen": first_seen,
        "entry_id": entry,
        "score": 0.71,
        "threshold": 0.574,
        "margin": 0.3,
        "frames_matched": 4,
        "face": {"bbox": [10.0, 20.0, 80.0, 80.0], "size_px": 80.0, "sharpness": 120.0, "yaw": 3.0, "detector_score": 0.9},
        "watchlist": {"name": "city", "version": version, "sha256": "a" * 64},
        "models": {"detector": "b" * 64, "embedder": "c" * 64},
        "review": "candidate",
    }


def status(device: str = "pole-1", state: str = "online", version: int | None = 3, depth: int = 2) -> dict[str, Any]:
    return {
        "schema": "edge.status/1",
        "device_id": device,
        "state": state,
        "ts": "2026-11-22T10:00:00.000Z",
        "outbox": {"depth": depth, "oldest_age_s": 5.0, "dropped": 0},
        "watchlist": {"name": "city", "version": version, "sha256": "a" * 64, "entries": 10, "last_sync": None},
    }


def ack(device: str = "pole-1", outcome: str = "applied", reason: str = "applied", version: int | None = 3) -> dict[str, Any]:
    return {
        "schema": "edge.watchlist-ack/1", "device_id": device, "watchlist": "city", "version": version, "previous_version": 2,
        "outcome": outcome, "reason": reason, "message": reason, "ts": "2026-11-22T10:00:00.000Z",
    }  # fmt: skip


def revoke_ack(
    device: str = "pole-1", sequence: int = 1, outcome: str = "applied", reason: str = "applied", removed: int | None = None
) -> dict[str, Any]:
    """A device's answer to a signed revocation, as edge/watchlist/sync.py sends it."""
    doc = {**ack(device, outcome, reason, version=3), "kind": "revoke", "revoke_sequence": sequence, "previous_version": 3}
    if removed is not None:
        doc["removed"] = removed
    return doc


def audit(device: str = "pole-1", seq: int = 10, head: str = "d" * 64, chain_ok: bool = True) -> dict[str, Any]:
    return {
        "schema": "edge.audit/1", "device_id": device, "ts": "2026-11-22T10:00:00.000Z", "seq": seq, "head": head,
        "first_seq": 1, "count": seq, "chain_ok": chain_ok,
    }  # fmt: skip


def topic(doc: dict[str, Any], device: str | None = None) -> str:
    suffix = {"edge.hit/1": "hits", "edge.status/1": "status", "edge.watchlist-ack/1": "watchlist/ack", "edge.audit/1": "audit"}
    return f"edge/v1/{device or doc['device_id']}/{suffix[doc['schema']]}"


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()
