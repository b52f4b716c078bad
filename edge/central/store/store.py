"""The central store: one Python API over SQLite (embedded default) and PostgreSQL (fleet backend)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from edge.central.store import partitions
from edge.central.store import schema as t
from edge.central.store.engine import database_url, migrate, open_engine
from edge.central.store.errors import ReviewError, StoreError, UnknownEventError
from edge.central.store.records import (
    AuditEntry,
    DeviceView,
    Hit,
    IngestResult,
    Message,
    Published,
    Rejection,
    Review,
    RevocationAck,
)

log = logging.getLogger(__name__)

STALE_AFTER_S = (
    120.0  # a device silent this long is not online in either console, whatever its last status said (heartbeat: 30 s)
)
_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,64}$")


_HIT_COLUMNS = {
    "event_id": "text", "first_seen": "timestamptz", "last_seen": "timestamptz", "device_id": "text", "camera": "text",
    "entry_id": "text", "label": "text", "score": "float8", "threshold": "float8", "watchlist_name": "text",
    "watchlist_version": "int8", "received_at": "timestamptz", "stored_at": "timestamptz", "payload": "text",
}  # fmt: skip
_PG_INSERT_HITS = (
    f"INSERT INTO hits ({', '.join(_HIT_COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%({c})b::{ty}[]' for c, ty in _HIT_COLUMNS.items())}) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


def now() -> datetime:
    return datetime.now(UTC)


def parse_ts(s: str) -> datetime:
    """A device timestamp (RFC 3339 UTC with a Z) as an aware datetime."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def _hit(r: Any, history: list[Review]) -> Hit:
    state = t.STATE_OF[history[-1].decision] if history else "candidate"
    return Hit(r.event_id, r.device_id, r.camera, r.entry_id, r.label, r.score, r.threshold, r.first_seen, r.last_seen,
               r.watchlist_name, int(r.watchlist_version), r.received_at, state, history)  # fmt: skip


class Store:
    """Hits, reviews, device status, acks, audit heads, published watchlists and the central audit log.

    ``db`` is a SQLite file path (created with its schema if absent), ``:memory:``, or a
    ``postgresql://`` URL. ``must_exist`` refuses a SQLite file that does not exist yet. ``ping=False``
    skips the per-checkout connection test (ingest workers, which retry a failed batch themselves).
    Safe to share between threads; several processes may open one database.
    """

    def __init__(self, db: str | Path, *, must_exist: bool = False, ping: bool = True) -> None:
        url = database_url(db, must_exist=must_exist)
        self.engine: Engine = open_engine(url, ping=ping)
        self.backend: str = self.engine.dialect.name
        logging.getLogger("alembic").setLevel(logging.WARNING)
        migrate(self.engine)
        self._partitions: set[str] = set()
        if self.backend == "postgresql":
            with self._tx() as c:
                self._partitions = partitions.existing(c)
                current = partitions.month_start(now())
                for k in range(partitions.MONTHS_AHEAD + 1):
                    self._ensure_partition(c, partitions.add_months(current, k))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _tx(self) -> Any:
        return self.engine.begin()

    def _insert(self, table: Any) -> Any:
        return (pg_insert if self.backend == "postgresql" else sqlite_insert)(table)

    # ----------------------------------------------------------------- ingest

    def write(self, batch: Sequence[Message | Rejection]) -> list[IngestResult]:
        """Store a batch in one transaction (committed when this returns); one result per item, in order.

        Hits are de-duplicated by ``(event_id, first_seen)`` with ON CONFLICT DO NOTHING, so a
        redelivered batch (a worker killed before it acknowledged) changes nothing.
        """
        try:
            return self._write(batch)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"could not store a batch of {len(batch)}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc

    def _write(self, batch: Sequence[Message | Rejection]) -> list[IngestResult]:
        hit_msgs = [m for m in batch if isinstance(m, Message) and m.kind == "hit"]
        if self.backend == "postgresql" and hit_msgs:
            self._ensure_partitions_for(hit_msgs)
        results: dict[int, IngestResult] = {}
        with self._tx() as c:
            if hit_msgs:
                inserted = self._insert_hits(c, hit_msgs)
                dups = 0
                seen: set[str] = set()
                for m in hit_msgs:
                    eid = m.doc["event_id"]
                    fresh = eid in inserted and eid not in seen
                    seen.add(eid)
                    dups += not fresh
                    results[id(m)] = IngestResult("hit" if fresh else "duplicate", eid)
                if dups:
                    self._count(c, "duplicates", dups)
            for item in batch:
                if isinstance(item, Rejection):
                    c.execute(insert(t.rejected).values(topic=item.topic, reason=item.reason[:500], received_at=item.received_at,
                                                       excerpt=item.excerpt[:200]))  # fmt: skip
                    results[id(item)] = IngestResult("rejected", item.reason)
                elif item.kind == "status":
                    results[id(item)] = self._status(c, item)
                elif item.kind == "ack":
                    results[id(item)] = self._ack(c, item)
                elif item.kind == "audit":
                    results[id(item)] = self._audit_head(c, item)
        return [results[id(m)] for m in batch]

    def _ensure_partitions_for(self, msgs: Iterable[Message]) -> None:
        months = {partitions.month_start(parse_ts(m.doc["first_seen"])) for m in msgs}
        wanted = [
            mo for mo in months if partitions.in_window(mo, now()) and partitions.partition_name(mo) not in self._partitions
        ]
        if wanted:
            with self._tx() as c:
                for mo in sorted(wanted):
                    self._ensure_partition(c, mo)

    def _ensure_partition(self, c: Connection, month: datetime) -> None:
        partitions.ensure(c, month)
        self._partitions.add(partitions.partition_name(month))

    def _insert_hits(self, c: Connection, msgs: Sequence[Message]) -> set[str]:
        stamp = now()
        rows = []
        for m in msgs:
            d = m.doc
            rows.append({
                "event_id": d["event_id"], "first_seen": parse_ts(d["first_seen"]), "last_seen": parse_ts(d["last_seen"]),
                "device_id": m.device_id, "camera": d["camera"], "entry_id": d["entry_id"], "label": d.get("label"),
                "score": d["score"], "threshold": d["threshold"], "watchlist_name": d["watchlist"]["name"],
                "watchlist_version": d["watchlist"]["version"], "received_at": m.received_at, "stored_at": stamp,
                "payload": json.dumps(d, sort_keys=True),
            })  # fmt: skip
        if self.backend == "postgresql":
            # One statement with one array per column: a fixed query text psycopg prepares once, instead
            # of a multi-row VALUES with 14 parameters per row that it re-parses for every batch. The
            # arrays go in binary (``%(x)b``): the text format escapes every quote of every JSON payload
            # with a regex substitution, a fifth of a worker's CPU.
            params = {col: [r[col] for r in rows] for col in _HIT_COLUMNS}
            return {r[0] for r in c.exec_driver_sql(_PG_INSERT_HITS, params)}
        stmt = self._insert(t.hits).on_conflict_do_nothing().returning(t.hits.c.event_id)
        return {r[0] for r in c.execute(stmt, rows)}

    def _count(self, c: Connection, name: str, n: int = 1) -> None:
        stmt = self._insert(t.counters).values(name=name, value=n)
        c.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"value": t.counters.c.value + n}))

    def _status(self, c: Connection, m: Message) -> IngestResult:
        d = m.doc
        wl = d.get("watchlist") or {}
        ob = d.get("outbox") or {}
        row = {"state": d["state"], "sent_at": d.get("ts"), "received_at": m.received_at, "watchlist_name": wl.get("name"),
               "watchlist_version": wl.get("version"), "outbox_depth": ob.get("depth"), "outbox_dropped": ob.get("dropped"),
               "payload": json.dumps(d, sort_keys=True)}  # fmt: skip
        if not m.retained:
            row["heard_at"] = m.received_at
        if m.retained and d["state"] != "offline":
            # A retained "online" says what the device last said, not that it is there now: keep
            # the newer live row if there is one.
            current = c.execute(select(t.device_status.c.heard_at).where(t.device_status.c.device_id == m.device_id)).first()
            if current is not None and current[0] is not None:
                return IngestResult("status", f"{d['state']} (retained, older than what was heard)")
        stmt = self._insert(t.device_status).values(device_id=m.device_id, **row)
        c.execute(stmt.on_conflict_do_update(index_elements=["device_id"], set_=row))
        c.execute(insert(t.status_history).values(device_id=m.device_id, state=d["state"], sent_at=d.get("ts"),
                                                  received_at=m.received_at, payload=row["payload"]))  # fmt: skip
        return IngestResult("status", d["state"])

    def _ack(self, c: Connection, m: Message) -> IngestResult:
        d = m.doc
        c.execute(insert(t.watchlist_acks).values(
            device_id=m.device_id, watchlist=d["watchlist"], version=d["version"], previous_version=d["previous_version"],
            outcome=d["outcome"], reason=d["reason"], message=d["message"], sent_at=d.get("ts"), received_at=m.received_at,
            kind=d.get("kind") or "bundle", revoke_sequence=d.get("revoke_sequence"), removed=d.get("removed"),
        ))  # fmt: skip
        what = f"revocation {d.get('revoke_sequence')}" if d.get("kind") == "revoke" else f"v{d['version']}"
        return IngestResult("ack", f"{what} {d['outcome']} {d['reason']}")

    def _audit_head(self, c: Connection, m: Message) -> IngestResult:
        d = m.doc
        h = t.audit_heads.c
        prev = c.execute(select(h.seq, h.head, h.problem).where(h.device_id == m.device_id)).first()
        known = (
            c.execute(
                select(t.audit_head_history.c.head).where(
                    and_(t.audit_head_history.c.device_id == m.device_id, t.audit_head_history.c.seq == d["seq"])
                )
            )
            .scalars()
            .all()
        )
        problem: str | None = None
        if known and d["head"] not in known:
            problem = f"forked: seq {d['seq']} had head {known[0][:12]}…, now {d['head'][:12]}…"
        elif prev is not None and d["seq"] < prev.seq:
            problem = f"went back: seq {d['seq']} after {prev.seq}"
        elif not d["chain_ok"]:
            problem = "the device reports its chain broken"
        if problem is None and prev is not None and prev.problem:
            problem = prev.problem  # a problem stays flagged until someone looks (not cleared by the next head)
        c.execute(self._insert(t.audit_head_history).values(device_id=m.device_id, seq=d["seq"], head=d["head"],
                                                           received_at=m.received_at).on_conflict_do_nothing())  # fmt: skip
        row = {"seq": max(d["seq"], prev.seq) if prev is not None else d["seq"], "head": d["head"], "first_seq": d["first_seq"],
               "count": d["count"], "chain_ok": d["chain_ok"], "sent_at": d.get("ts"), "received_at": m.received_at,
               "problem": problem}  # fmt: skip
        if prev is not None and d["seq"] < prev.seq:
            row["seq"], row["head"] = prev.seq, prev.head  # keep the furthest head seen
        stmt = self._insert(t.audit_heads).values(device_id=m.device_id, **row)
        c.execute(stmt.on_conflict_do_update(index_elements=["device_id"], set_=row))
        if problem:
            log.warning("audit chain of %s: %s", m.device_id, problem)
        return IngestResult("audit", problem or f"seq {d['seq']}")

    # ----------------------------------------------------------------- reviews

    def resolve_event_id(self, prefix: str) -> str:
        """The one event id starting with ``prefix`` (at least 4 characters of the id)."""
        if not _PREFIX.match(prefix):
            raise UnknownEventError(f"{prefix!r} is not an event id or a prefix of one (4 or more hex digits)")
        with self.engine.connect() as c:
            ids = (
                c.execute(
                    select(t.hits.c.event_id)
                    .where(t.hits.c.event_id.startswith(prefix.lower(), autoescape=True))
                    .distinct()
                    .limit(2)
                )
                .scalars()
                .all()
            )
        if not ids:
            raise UnknownEventError(f"no hit with event id {prefix}")
        if len(ids) > 1:
            raise UnknownEventError(
                f"event id prefix {prefix} matches more than one hit ({ids[0]}, {ids[1]}, …): give more of it"
            )
        return str(ids[0])

    def review(self, event_id: str, decision: str, reviewer: str, *, reason: str = "", note: str = "") -> Review:
        """Append a decision on a hit (``event_id`` may be a unique prefix). Nothing is overwritten:
        a second decision is a new row that records the one it changes."""
        if decision not in t.DECISIONS:
            raise ReviewError(f"a review decision is one of {', '.join(t.DECISIONS)}, not {decision!r}")
        if not reviewer.strip():
            raise ReviewError("a review needs the reviewer's name (--by)")
        eid = self.resolve_event_id(event_id)
        r = t.reviews.c
        with self._tx() as c:
            prev = c.execute(select(r.decision).where(r.event_id == eid).order_by(r.id.desc()).limit(1)).scalar()
            ts = now()
            new_id = c.execute(
                insert(t.reviews)
                .values(
                    event_id=eid, decision=decision, reviewer=reviewer, ts=ts, reason=reason, note=note, previous_decision=prev
                )
                .returning(r.id)
            ).scalar_one()
        return Review(int(new_id), eid, decision, reviewer, ts, reason, note, prev)

    def history(self, event_id: str) -> list[Review]:
        return self._histories([event_id]).get(event_id, [])

    def _histories(self, event_ids: Sequence[str]) -> dict[str, list[Review]]:
        out: dict[str, list[Review]] = {}
        if not event_ids:
            return out
        r = t.reviews.c
        with self.engine.connect() as c:
            for chunk in (event_ids[i : i + 500] for i in range(0, len(event_ids), 500)):
                rows = c.execute(select(t.reviews).where(r.event_id.in_(chunk)).order_by(r.id)).all()
                for row in rows:
                    out.setdefault(row.event_id, []).append(
                        Review(
                            int(row.id),
                            row.event_id,
                            row.decision,
                            row.reviewer,
                            row.ts,
                            row.reason,
                            row.note,
                            row.previous_decision,
                        )
                    )
        return out

    # ----------------------------------------------------------------- hits

    def hits(self, limit: int | None = None, *, device_id: str | None = None, with_history: bool = True) -> list[Hit]:
        """Hits, newest received first (the central receive time: a device clock in 9999 cannot
        push real hits off the top)."""
        h = t.hits.c
        q = select(t.hits).order_by(h.received_at.desc(), h.event_id)
        if device_id is not None:
            q = q.where(h.device_id == device_id)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as c:
            rows = c.execute(q).all()
        hist = self._histories([r.event_id for r in rows]) if with_history else {}
        out = []
        for r in rows:
            out.append(_hit(r, hist.get(r.event_id, [])))
        return out

    def hit(self, event_id: str) -> Hit:
        eid = self.resolve_event_id(event_id)
        with self.engine.connect() as c:
            r = c.execute(select(t.hits).where(t.hits.c.event_id == eid).limit(1)).one()
        return _hit(r, self.history(eid))

    def hit_payload(self, event_id: str) -> dict[str, Any]:
        """The hit exactly as the device sent it."""
        eid = self.resolve_event_id(event_id)
        with self.engine.connect() as c:
            text_ = c.execute(select(t.hits.c.payload).where(t.hits.c.event_id == eid).limit(1)).scalar_one()
        doc: dict[str, Any] = json.loads(text_)
        return doc

    def hits_before(self, cutoff: datetime) -> list[tuple[str, int]]:
        """What ``drop_hits_before(cutoff)`` would remove, changing nothing: (partition, hits) on
        PostgreSQL (``hits_other`` for stray rows), ``("hits", n)`` on SQLite."""
        month = partitions.month_start(cutoff)
        with self.engine.connect() as c:
            if self.backend == "postgresql":
                return partitions.before(c, month)
            n = int(c.execute(select(func.count()).select_from(t.hits).where(t.hits.c.first_seen < month)).scalar_one())
        return [("hits", n)] if n else []

    def drop_hits_before(self, cutoff: datetime, actor: str) -> list[tuple[str, int]]:
        """Retention: remove hits first seen before the month of ``cutoff`` (whole months; on PostgreSQL
        whole partitions are detached and dropped) with their reviews. Audited. Returns what was
        removed, as :meth:`hits_before` lists it."""
        month = partitions.month_start(cutoff)
        with self._tx() as c:
            if self.backend == "postgresql":
                removed = partitions.drop_before(c, month)
                self._partitions -= {name for name, _n in removed}
            else:
                n = c.execute(t.hits.delete().where(t.hits.c.first_seen < month)).rowcount
                removed = [("hits", int(n))] if n else []
            c.execute(t.reviews.delete().where(t.reviews.c.event_id.not_in(select(t.hits.c.event_id))))
            total = sum(n for _name, n in removed)
            self._audit(c, actor, "retention", f"hits before {month.date()}", f"{total} hits removed; {removed}")
        return removed

    # ----------------------------------------------------------------- watchlists, fleet

    def publish_watchlist(self, name: str, version: int, sha256: str, expires_at: datetime | None, by: str) -> None:
        """Record what the operator published: the fleet's current version under ``name``."""
        with self._tx() as c:
            c.execute(insert(t.published_watchlists).values(name=name, version=version, sha256=sha256, expires_at=expires_at,
                                                            published_at=now(), published_by=by))  # fmt: skip
            self._audit(c, by, "watchlist-publish", f"{name} v{version}", f"sha256 {sha256}")

    def published(self) -> dict[str, Published]:
        """The latest publication of each watchlist name."""
        p = t.published_watchlists.c
        with self.engine.connect() as c:
            rows = c.execute(select(t.published_watchlists).order_by(p.id)).all()
        return {r.name: Published(r.name, int(r.version), r.sha256, r.expires_at, r.published_at, r.published_by) for r in rows}

    def revocations(self) -> dict[str, RevocationAck]:
        """Each device's latest answer to a signed revocation (kept apart from its bundle answers)."""
        a = t.watchlist_acks.c
        latest = select(func.max(a.id)).where(a.kind == "revoke").group_by(a.device_id)
        with self.engine.connect() as c:
            rows = c.execute(select(t.watchlist_acks).where(a.id.in_(latest))).all()
        return {
            r.device_id: RevocationAck(
                None if r.revoke_sequence is None else int(r.revoke_sequence), r.outcome,
                None if r.removed is None else int(r.removed), r.reason, r.message,
            )
            for r in rows
        }  # fmt: skip

    def devices(self, *, stale_after_s: float = STALE_AFTER_S, at: datetime | None = None) -> list[DeviceView]:
        at = at or now()
        published = self.published()
        revocations = self.revocations()
        a = t.watchlist_acks.c
        with self.engine.connect() as c:
            status = c.execute(select(t.device_status).order_by(t.device_status.c.device_id)).all()
            # The latest answer to a bundle: a later revocation answer does not hide it.
            latest_ack = select(func.max(a.id)).where(a.kind != "revoke").group_by(a.device_id)
            acks = {r.device_id: r for r in c.execute(select(t.watchlist_acks).where(a.id.in_(latest_ack))).all()}
            audit = dict(c.execute(select(t.audit_heads.c.device_id, t.audit_heads.c.problem)).all())
        out = []
        for s in status:
            heard = s.heard_at
            online = s.state != "offline" and heard is not None and (at - heard).total_seconds() <= stale_after_s
            pub = published.get(s.watchlist_name) if s.watchlist_name else None
            if pub is None and len(published) == 1:
                pub = next(iter(published.values()))  # a device that has no watchlist yet is behind the fleet's one
            ack = acks.get(s.device_id)
            refused = (ack.version, ack.reason, ack.message) if ack is not None and ack.outcome == "refused" else None
            out.append(DeviceView(
                s.device_id, s.state, online, heard, s.received_at, s.watchlist_name,
                None if s.watchlist_version is None else int(s.watchlist_version), pub.version if pub else None,
                s.outbox_depth, s.outbox_dropped, refused, audit.get(s.device_id), revocations.get(s.device_id),
            ))  # fmt: skip
        return out

    # ----------------------------------------------------------------- audit log, counts

    def audit(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        """Record an operator action (logins, exports, reviews by the web console, …)."""
        with self._tx() as c:
            self._audit(c, actor, action, target, detail)

    def _audit(self, c: Connection, actor: str, action: str, target: str, detail: str) -> None:
        c.execute(insert(t.audit_log).values(ts=now(), actor=actor, action=action, target=target, detail=detail))

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self.engine.connect() as c:
            rows = c.execute(select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit)).all()
        return [AuditEntry(int(r.id), r.ts, r.actor, r.action, r.target, r.detail) for r in rows]

    def rejected(self, limit: int = 100) -> list[tuple[str, str, datetime]]:
        """Messages kept aside: (topic, reason, received_at), newest first."""
        with self.engine.connect() as c:
            rows = c.execute(select(t.rejected).order_by(t.rejected.c.id.desc()).limit(limit)).all()
        return [(r.topic, r.reason, r.received_at) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:

            def one(q: Any) -> int:
                return int(c.execute(q).scalar() or 0)

            return {
                "hits": one(select(func.count()).select_from(t.hits)),
                "duplicates": one(select(t.counters.c.value).where(t.counters.c.name == "duplicates")),
                "rejected": one(select(func.count()).select_from(t.rejected)),
                "acks": one(select(func.count()).select_from(t.watchlist_acks)),
                "devices": one(select(func.count()).select_from(t.device_status)),
                "reviews": one(select(func.count()).select_from(t.reviews)),
            }

    def export(self, fmt: str) -> str:
        """Every hit with its review history, as ``csv`` or ``json``."""
        from edge.central.store.export import render

        return render(self.hits(), fmt)
