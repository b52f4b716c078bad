"""Muting an entry or a camera for a time window: its hits are still stored, only kept out of the queue."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from edge.central.web.tables import mutes
from edge.errors import EdgeError

MAX_HOURS = 24 * 30


class MuteError(EdgeError):
    """A mute request is incomplete or out of range."""


@dataclass(frozen=True)
class Mute:
    id: int
    kind: str
    device_id: str | None
    target: str
    until: float
    created_by: str

    @property
    def label(self) -> str:
        return f"{self.device_id}/{self.target}" if self.kind == "camera" else self.target

    @property
    def until_text(self) -> str:
        return datetime.fromtimestamp(self.until, UTC).strftime("%Y-%m-%d %H:%M UTC")


def add(engine: sa.Engine, kind: str, target: str, device_id: str | None, hours: float, by: str, reason: str = "") -> Mute:
    if kind not in ("entry", "camera"):
        raise MuteError(f"mute an entry or a camera, not {kind!r}")
    if not target or (kind == "camera" and not device_id):
        raise MuteError("a mute needs its entry, or its camera and device")
    if not 0 < hours <= MAX_HOURS:
        raise MuteError(f"mute for 0 to {MAX_HOURS} hours")
    now = time.time()
    values = {
        "kind": kind,
        "device_id": device_id if kind == "camera" else None,
        "target": target[:128],
        "until": now + hours * 3600,
        "created_by": by,
        "created_at": now,
        "reason": reason[:500],
    }
    with engine.begin() as c:
        mid = c.execute(mutes.insert().values(**values)).inserted_primary_key[0]  # type: ignore[index]
    return Mute(int(mid), kind, values["device_id"], values["target"], values["until"], by)  # type: ignore[arg-type]


def end(engine: sa.Engine, mute_id: int) -> Mute | None:
    now = time.time()
    with engine.begin() as c:
        row = c.execute(sa.select(mutes).where(mutes.c.id == mute_id, mutes.c.until > now)).mappings().first()
        if row is None:
            return None
        c.execute(mutes.update().where(mutes.c.id == mute_id).values(until=now))
    return _mute(row)


def active(engine: sa.Engine) -> list[Mute]:
    with engine.connect() as c:
        rows = c.execute(sa.select(mutes).where(mutes.c.until > time.time()).order_by(mutes.c.until)).mappings().all()
    return [_mute(r) for r in rows]


def _mute(r: sa.RowMapping) -> Mute:
    return Mute(int(r["id"]), str(r["kind"]), r["device_id"], str(r["target"]), float(r["until"]), str(r["created_by"]))


def muted_clause(
    device_col: sa.ColumnElement[str], camera_col: sa.ColumnElement[str], entry_col: sa.ColumnElement[str]
) -> sa.ColumnElement[bool]:
    """SQL that is true for a hit an active mute covers (for filtering the queue in the database)."""
    now = time.time()
    entry = sa.select(mutes.c.id).where(mutes.c.kind == "entry", mutes.c.target == entry_col, mutes.c.until > now)
    camera = sa.select(mutes.c.id).where(
        mutes.c.kind == "camera", mutes.c.device_id == device_col, mutes.c.target == camera_col, mutes.c.until > now
    )
    return sa.or_(entry.exists(), camera.exists())
