"""The Fleet page's view of each device: heard or silent, watchlist drift, backlog, cameras, errors (redacted)."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from edge.central.store import STALE_AFTER_S, RevocationAck

_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SECRET_PAIRS = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|key)(\s*[=:]\s*)\S+")


def redact(text: str | None) -> str:
    """An error message with credentials taken out (user:password@ in URLs, password=… pairs)."""
    if not text:
        return ""
    text = _URL_CREDENTIALS.sub(r"\1***@", text)
    return _SECRET_PAIRS.sub(r"\1\2***", text)[:500]


def _age(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "never"
    s = (now - ts).total_seconds()
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def device_view(
    row: dict[str, Any],
    published: dict[str, int],
    refused: list[dict[str, Any]],
    head: dict[str, Any] | None,
    now: datetime,
    revocation: RevocationAck | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    try:
        loaded = json.loads(row.get("payload") or "{}")
        doc = loaded if isinstance(loaded, dict) else {}
    except ValueError:
        doc = {}
    heard = row.get("heard_at")
    silent = heard is None or (now - heard).total_seconds() > STALE_AFTER_S
    state = row.get("state") or "unknown"
    shown = "offline" if state == "offline" else ("silent" if silent else state)
    wl = doc.get("watchlist") if isinstance(doc.get("watchlist"), dict) else {}
    name = row.get("watchlist_name") or (wl or {}).get("name")
    version = row.get("watchlist_version")
    want = published.get(str(name)) if name else None
    cameras = []
    for cam in doc.get("cameras") or []:
        if isinstance(cam, dict):
            cameras.append(
                {"camera": str(cam.get("camera", "?")), "state": str(cam.get("state", "?")), "error": redact(cam.get("error"))}
            )
    outbox = doc.get("outbox") if isinstance(doc.get("outbox"), dict) else {}
    return {
        "device_id": row["device_id"],
        "state": shown,
        "ok": shown in ("online",),
        "heard": _age(heard, now),
        "watchlist": name or "–",
        "version": version,
        "published": want,
        "drift": want is not None and version != want,
        "expires_at": (wl or {}).get("expires_at") or "–",
        # Device-supplied: a plausible number or nothing; only an explicit false raises the alarm.
        "threshold": _number((wl or {}).get("threshold"), -1.0, 1.0),
        "holds_max_fpir": (wl or {}).get("holds_max_fpir") is not False,
        "outbox_depth": row.get("outbox_depth") or 0,
        "outbox_oldest_s": _number((outbox or {}).get("oldest_age_s"), 0.0, 1e9),
        "outbox_dropped": row.get("outbox_dropped") or 0,
        "cameras": cameras,
        "last_error": redact(doc.get("last_error")),
        "refused": [{"what": _answered(a), "reason": a["reason"], "message": redact(a["message"])} for a in refused],
        "revocation": None
        if revocation is None
        else {
            "sequence": revocation.sequence,
            "applied": revocation.outcome == "applied",
            "removed": revocation.removed,
            "reason": revocation.reason,
        },
        "chain": "not reported"
        if head is None
        else ("ok" if head["chain_ok"] else f"PROBLEM: {head.get('problem') or 'check failed'}"),
        "chain_ok": head is None or bool(head["chain_ok"]),
    }


def _number(value: object, low: float, high: float) -> float | None:
    """``value`` as a float when it is a finite number within [low, high], else None.

    A device's JSON may hold a 400-digit integer (``float`` overflows) or 1e400 (infinity): either would
    break or mislead the page for every operator.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and low <= number <= high else None


def _answered(ack: dict[str, Any]) -> str:
    """What an ack answers: a bundle version or a revocation's sequence."""
    if ack.get("kind") == "revoke":
        return f"revocation #{ack.get('revoke_sequence')}"
    return f"v{ack.get('version')}"


def now_utc() -> datetime:
    return datetime.now(UTC)
