"""What the console reads from and writes to the central store: hits, reviews, the audit log, the fleet.

Queries run in the database (filters, mutes, the latest decision per hit) so the queue stays
fast on a large store; the pages get plain dicts. The tables are the store's
(``edge.central.store.schema``); the console adds only its own (``tables``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from edge.central.store import STATE_OF, Store, UnknownEventError
from edge.central.store.schema import audit_heads, device_status, hits, reviews, watchlist_acks
from edge.central.web import fleet, mutes

log = logging.getLogger(__name__)
DECISION_OF = {state: decision for decision, state in STATE_OF.items()}
# Hits committed by another ingest worker may carry a receive time slightly before the newest one
# already shown; the live stream looks back this far and remembers what it sent.
LIVE_LOOKBACK = timedelta(seconds=30)


NotFoundError = UnknownEventError


@dataclass(frozen=True)
class HitFilter:
    device: str | None = None
    camera: str | None = None
    entry: str | None = None
    state: str | None = None
    muted: bool = False


@dataclass
class LiveCursor:
    since: datetime
    sent: dict[str, datetime] = field(default_factory=dict)


def _iso(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ts else ""


def _now() -> datetime:
    return datetime.now(UTC)


def audit(store: Store, actor: str, action: str, target: str, detail: str) -> None:
    store.audit(actor[:128], action[:64], target[:500], detail[:2000])


def audit_entries(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    return [
        {"at": _iso(e.ts), "actor": e.actor, "action": e.action, "target": e.target, "detail": e.detail}
        for e in store.audit_log(limit)
    ]


def _latest_review() -> sa.Subquery:
    ranked = sa.select(
        reviews.c.event_id, reviews.c.decision,
        sa.func.row_number().over(partition_by=reviews.c.event_id, order_by=reviews.c.id.desc()).label("rn"),
    ).subquery()  # fmt: skip
    return sa.select(ranked.c.event_id, ranked.c.decision).where(ranked.c.rn == 1).subquery()


def _query(f: HitFilter) -> sa.Select[Any]:
    latest = _latest_review()
    muted = mutes.muted_clause(hits.c.device_id, hits.c.camera, hits.c.entry_id)
    q = sa.select(hits, latest.c.decision, muted.label("muted")).select_from(
        hits.outerjoin(latest, latest.c.event_id == hits.c.event_id)
    )
    if f.device:
        q = q.where(hits.c.device_id == f.device)
    if f.camera:
        q = q.where(hits.c.camera == f.camera)
    if f.entry:
        q = q.where(hits.c.entry_id == f.entry)
    if f.state == "candidate":
        q = q.where(latest.c.decision.is_(None))
    elif f.state in DECISION_OF:
        q = q.where(latest.c.decision == DECISION_OF[f.state])
    if not f.muted:
        q = q.where(sa.not_(muted))
    return q


def _reviews_of(c: sa.Connection, event_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {e: [] for e in event_ids}
    if event_ids:
        rows = c.execute(sa.select(reviews).where(reviews.c.event_id.in_(event_ids)).order_by(reviews.c.id)).mappings().all()
        for r in rows:
            out[r["event_id"]].append({**r, "state": STATE_OF.get(r["decision"], r["decision"]), "at": _iso(r["ts"])})
    return out


def _hit(row: sa.RowMapping, history: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        doc = json.loads(row["payload"])
    except ValueError:
        doc = {}
    return {
        "event_id": row["event_id"],
        "device_id": row["device_id"],
        "camera": row["camera"],
        "entry_id": row["entry_id"],
        "label": row["label"],
        "score": row["score"],
        "threshold": row["threshold"],
        "margin": doc.get("margin"),
        "frames_matched": doc.get("frames_matched"),
        "face": doc.get("face") if isinstance(doc.get("face"), dict) else {},
        "first_seen": _iso(row["first_seen"]),
        "state": STATE_OF.get(row["decision"], "candidate") if row["decision"] else "candidate",
        "muted": bool(row["muted"]),
        "has_thumbnail": bool(doc.get("thumbnail_jpeg_b64")),
        "reviews": history,
    }


def list_hits(store: Store, f: HitFilter, limit: int = 100) -> list[dict[str, Any]]:
    q = _query(f).order_by(hits.c.received_at.desc(), hits.c.first_seen.desc()).limit(limit)
    with store.engine.connect() as c:
        rows = c.execute(q).mappings().all()
        history = _reviews_of(c, [r["event_id"] for r in rows])
    return [_hit(r, history[r["event_id"]]) for r in rows]


def get_hit(store: Store, event_id: str) -> dict[str, Any] | None:
    q = _query(HitFilter(muted=True)).where(hits.c.event_id == event_id)
    with store.engine.connect() as c:
        row = c.execute(q).mappings().first()
        if row is None:
            return None
        return _hit(row, _reviews_of(c, [event_id])[event_id])


def thumbnail_b64(store: Store, event_id: str) -> str | None:
    with store.engine.connect() as c:
        payload = c.execute(sa.select(hits.c.payload).where(hits.c.event_id == event_id)).scalar()
    if payload is None:
        return None
    value = json.loads(payload).get("thumbnail_jpeg_b64")
    return value if isinstance(value, str) else None


def latest_cursor(store: Store) -> LiveCursor:
    """Where a live stream starts: now. Its first poll repeats the look-back window; the page skips cards it has."""
    return LiveCursor(_now())


def hits_after(store: Store, cursor: LiveCursor, f: HitFilter) -> tuple[list[str], LiveCursor]:
    """Hits received since the cursor (minus the look-back) that the filter shows and were not sent yet, oldest first."""
    q = _query(f).where(hits.c.received_at > cursor.since - LIVE_LOOKBACK).order_by(hits.c.received_at).limit(500)
    with store.engine.connect() as c:
        rows = c.execute(q).mappings().all()
    fresh = [r for r in rows if r["event_id"] not in cursor.sent]
    since = max([cursor.since, *(r["received_at"] for r in rows)])
    sent = {e: t for e, t in cursor.sent.items() if t > since - 2 * LIVE_LOOKBACK}
    sent.update((r["event_id"], r["received_at"]) for r in fresh)
    return [r["event_id"] for r in fresh], LiveCursor(since, sent)


def record_decision(store: Store, event_id: str, decision: str, reason: str, note: str, by: str) -> None:
    store.review(event_id, decision, by, reason=reason, note=note)


def entry_feedback(store: Store) -> dict[str, dict[str, list[float]]]:
    """Per entry: scores of hits whose latest decision says false match (not this person) and of confirmed hits."""
    latest = _latest_review()
    q = (
        sa.select(hits.c.entry_id, hits.c.score, latest.c.decision)
        .select_from(hits.join(latest, latest.c.event_id == hits.c.event_id))
        .where(latest.c.decision.in_(["not-this-person", "confirm"]))
    )
    out: dict[str, dict[str, list[float]]] = {}
    with store.engine.connect() as c:
        for entry, score, decision in c.execute(q):
            slot = out.setdefault(entry, {"false": [], "confirmed": []})
            slot["false" if decision == "not-this-person" else "confirmed"].append(float(score))
    return out


def published_versions(store: Store) -> dict[str, dict[str, Any]]:
    """The newest published version of each watchlist (what devices should hold)."""
    return {
        n: {"version": p.version, "sha256": p.sha256, "published_by": p.published_by, "at": _iso(p.published_at)}
        for n, p in store.published().items()
    }


def export_text(store: Store, fmt: str) -> str:
    return store.export(fmt)


def fleet_view(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        statuses = c.execute(sa.select(device_status).order_by(device_status.c.device_id)).mappings().all()
        heads = {r["device_id"]: dict(r) for r in c.execute(sa.select(audit_heads)).mappings()}
        refused: dict[str, list[dict[str, Any]]] = {}
        a = watchlist_acks.c
        for ack in c.execute(sa.select(watchlist_acks).where(a.outcome != "applied").order_by(a.id.desc()).limit(500)).mappings():
            if len(refused.setdefault(ack["device_id"], [])) < 3:
                refused[ack["device_id"]].append(dict(ack))
    published = {n: p.version for n, p in store.published().items()}
    revocations = store.revocations()
    now = _now()
    return [
        fleet.device_view(
            dict(r), published, refused.get(r["device_id"], []), heads.get(r["device_id"]), now, revocations.get(r["device_id"])
        )
        for r in statuses
    ]
