"""What the console reads from and writes to the central store: hits, reviews, the audit log, the fleet.

Queries run in the database (filters, mutes, the latest decision per hit) so the queue stays
fast on a large store; the pages get plain dicts.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from edge.central.web import mutes
from edge.errors import EdgeError

log = logging.getLogger(__name__)

# --- provisional store tables (replaced by edge.central.store's once it lands) -------------
_md = sa.MetaData()
hits = sa.Table(
    "hits", _md,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("first_seen", sa.String(32), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("camera", sa.String(64), nullable=False),
    sa.Column("entry_id", sa.String(128), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)  # fmt: skip
reviews = sa.Table(
    "reviews", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("decision", sa.String(32), nullable=False),
    sa.Column("reviewer", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
)  # fmt: skip
audit_log = sa.Table(
    "audit_log", _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)  # fmt: skip


class NotFoundError(EdgeError):
    """No hit with that event id."""


@dataclass(frozen=True)
class HitFilter:
    device: str | None = None
    camera: str | None = None
    entry: str | None = None
    state: str | None = None
    muted: bool = False


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def audit(engine: sa.Engine, actor: str, action: str, target: str, detail: str) -> None:
    with engine.begin() as c:
        c.execute(
            audit_log.insert().values(actor=actor, action=action, target=target[:500], ts=time.time(), detail=detail[:2000])
        )


def audit_entries(engine: sa.Engine, limit: int = 200) -> list[dict[str, Any]]:
    with engine.connect() as c:
        rows = c.execute(sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)).mappings().all()
    return [{**r, "at": _iso(r["ts"])} for r in rows]


def _latest_review() -> sa.Subquery:
    ranked = sa.select(
        reviews.c.event_id, reviews.c.decision,
        sa.func.row_number().over(partition_by=reviews.c.event_id, order_by=reviews.c.id.desc()).label("rn"),
    ).subquery()  # fmt: skip
    return sa.select(ranked.c.event_id, ranked.c.decision).where(ranked.c.rn == 1).subquery()


def _query(f: HitFilter) -> sa.Select[Any]:
    latest = _latest_review()
    state = sa.func.coalesce(latest.c.decision, "candidate").label("state")
    muted = mutes.muted_clause(hits.c.device_id, hits.c.camera, hits.c.entry_id)
    q = sa.select(hits, state, muted.label("muted")).select_from(hits.outerjoin(latest, latest.c.event_id == hits.c.event_id))
    if f.device:
        q = q.where(hits.c.device_id == f.device)
    if f.camera:
        q = q.where(hits.c.camera == f.camera)
    if f.entry:
        q = q.where(hits.c.entry_id == f.entry)
    if f.state:
        q = q.where(state == f.state)
    if not f.muted:
        q = q.where(sa.not_(muted))
    return q


def _reviews_of(c: sa.Connection, event_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {e: [] for e in event_ids}
    if event_ids:
        rows = c.execute(sa.select(reviews).where(reviews.c.event_id.in_(event_ids)).order_by(reviews.c.id)).mappings().all()
        for r in rows:
            out[r["event_id"]].append({**r, "at": _iso(r["ts"])})
    return out


def _hit(row: sa.RowMapping, history: list[dict[str, Any]]) -> dict[str, Any]:
    doc = json.loads(row["payload"])
    return {
        "event_id": row["event_id"],
        "device_id": row["device_id"],
        "camera": row["camera"],
        "entry_id": row["entry_id"],
        "label": doc.get("label"),
        "score": row["score"],
        "threshold": row["threshold"],
        "margin": doc.get("margin"),
        "frames_matched": doc.get("frames_matched"),
        "face": doc.get("face") or {},
        "first_seen": row["first_seen"],
        "state": row["state"],
        "muted": bool(row["muted"]),
        "has_thumbnail": bool(doc.get("thumbnail_jpeg_b64")),
        "reviews": history,
    }


def list_hits(engine: sa.Engine, f: HitFilter, limit: int = 100) -> list[dict[str, Any]]:
    q = _query(f).order_by(hits.c.first_seen.desc(), hits.c.received_at.desc()).limit(limit)
    with engine.connect() as c:
        rows = c.execute(q).mappings().all()
        history = _reviews_of(c, [r["event_id"] for r in rows])
    return [_hit(r, history[r["event_id"]]) for r in rows]


def get_hit(engine: sa.Engine, event_id: str) -> dict[str, Any] | None:
    q = _query(HitFilter(muted=True)).where(hits.c.event_id == event_id)
    with engine.connect() as c:
        row = c.execute(q).mappings().first()
        if row is None:
            return None
        return _hit(row, _reviews_of(c, [event_id])[event_id])


def thumbnail_b64(engine: sa.Engine, event_id: str) -> str | None:
    with engine.connect() as c:
        payload = c.execute(sa.select(hits.c.payload).where(hits.c.event_id == event_id)).scalar()
    if payload is None:
        return None
    value = json.loads(payload).get("thumbnail_jpeg_b64")
    return value if isinstance(value, str) else None


def latest_cursor(engine: sa.Engine) -> float:
    with engine.connect() as c:
        return float(c.execute(sa.select(sa.func.max(hits.c.received_at))).scalar() or 0.0)


def hits_after(engine: sa.Engine, cursor: float, f: HitFilter) -> tuple[list[str], float]:
    """Hits received after ``cursor`` that the filter shows (oldest first), and the new cursor."""
    q = _query(f).where(hits.c.received_at > cursor).order_by(hits.c.received_at).limit(200)
    with engine.connect() as c:
        rows = c.execute(q).mappings().all()
    if not rows:
        return [], cursor
    return [r["event_id"] for r in rows], float(rows[-1]["received_at"])


def record_decision(engine: sa.Engine, event_id: str, decision: str, reason: str, note: str, by: str) -> None:
    with engine.begin() as c:
        if c.execute(sa.select(hits.c.event_id).where(hits.c.event_id == event_id)).first() is None:
            raise NotFoundError(f"no hit with event_id {event_id}")
        c.execute(
            reviews.insert().values(event_id=event_id, decision=decision, reviewer=by, reason=reason, note=note, ts=time.time())
        )


def export_text(engine: sa.Engine, fmt: str) -> str:
    import csv
    import io

    with engine.connect() as c:
        rows = c.execute(sa.select(hits).order_by(hits.c.first_seen.desc())).mappings().all()
        history = _reviews_of(c, [r["event_id"] for r in rows])
    out = []
    for r in rows:
        h = {k: r[k] for k in ("event_id", "device_id", "camera", "entry_id", "score", "threshold", "first_seen")}
        h["reviews"] = [{k: v[k] for k in ("decision", "reviewer", "reason", "note", "at")} for v in history[r["event_id"]]]
        out.append(h)
    if fmt == "json":
        return json.dumps({"hits": out}, indent=2)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["event_id", "device_id", "camera", "entry_id", "score", "threshold", "first_seen", "reviews"])
    for h in out:
        w.writerow([h["event_id"], h["device_id"], h["camera"], h["entry_id"], h["score"], h["threshold"], h["first_seen"],
                    json.dumps(h["reviews"])])  # fmt: skip
    return buf.getvalue()


def entry_feedback(engine: sa.Engine) -> dict[str, dict[str, list[float]]]:
    """Per entry: scores of hits whose latest decision says false match (not this person) and of confirmed hits."""
    latest = _latest_review()
    q = (
        sa.select(hits.c.entry_id, hits.c.score, latest.c.decision)
        .select_from(hits.join(latest, latest.c.event_id == hits.c.event_id))
        .where(latest.c.decision.in_(["not-this-person", "confirmed"]))
    )
    out: dict[str, dict[str, list[float]]] = {}
    with engine.connect() as c:
        for entry, score, decision in c.execute(q):
            slot = out.setdefault(entry, {"false": [], "confirmed": []})
            slot["false" if decision == "not-this-person" else "confirmed"].append(float(score))
    return out
