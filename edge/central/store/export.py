"""Hits with their full review history as CSV or JSON (``edge alerts --export``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from edge.central.store.records import Hit

FIELDS = [
    "event_id", "device_id", "camera", "entry_id", "label", "score", "threshold", "first_seen", "last_seen",
    "watchlist_name", "watchlist_version", "received_at", "review", "reviewed_by", "review_note", "history",
]  # fmt: skip
ALL_FORMATS = ("csv", "json")


def _review(r: Any) -> dict[str, Any]:
    d = asdict(r)
    d["ts"] = r.ts.isoformat()
    return d


def hit_record(h: Hit) -> dict[str, Any]:
    """One hit as export keys: ``review`` is the derived state, ``history`` every decision, oldest first."""
    latest = h.latest
    return {
        "event_id": h.event_id, "device_id": h.device_id, "camera": h.camera, "entry_id": h.entry_id, "label": h.label,
        "score": h.score, "threshold": h.threshold, "first_seen": h.first_seen.isoformat(), "last_seen": h.last_seen.isoformat(),
        "watchlist_name": h.watchlist_name, "watchlist_version": h.watchlist_version, "received_at": h.received_at.isoformat(),
        "review": h.state, "reviewed_by": latest.reviewer if latest else "", "review_note": latest.note if latest else "",
        "history": [_review(r) for r in h.history],
    }  # fmt: skip


def render(hits: Sequence[Hit], fmt: str) -> str:
    records = [hit_record(h) for h in hits]
    if fmt == "json":
        return json.dumps(records, indent=2) + "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS)
    w.writeheader()
    for rec in records:
        # CSV has no nesting: the history is a JSON list in one column.
        w.writerow({**rec, "history": json.dumps(rec["history"])})
    return buf.getvalue()
