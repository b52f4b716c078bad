"""Monthly partitions of ``hits`` on PostgreSQL: created ahead and on demand, dropped whole for retention.

Partitions are keyed on the device's own ``first_seen``. Months inside a window around the
current time get their own partition; a hit dated far outside it (a device clock in 1970 or
9999) lands in the default partition ``hits_other`` instead of creating a partition per bogus
month. When a month later gets its own partition, rows already in ``hits_other`` for that month
are moved into it (PostgreSQL refuses to create the partition otherwise).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

from sqlalchemy import Connection, text

log = logging.getLogger(__name__)

MONTHS_BACK = 24  # months before now that may get a partition on demand
MONTHS_AHEAD = 2  # created ahead at open; also the furthest month created on demand
_LOCK_KEY = 0x65646765  # pg_advisory_xact_lock key: one partition change at a time across workers
_NAME = re.compile(r"^hits_y(\d{4})m(\d{2})$")


def month_start(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def add_months(month: datetime, n: int) -> datetime:
    k = month.year * 12 + month.month - 1 + n
    return month.replace(year=k // 12, month=k % 12 + 1)


def partition_name(month: datetime) -> str:
    return f"hits_y{month.year:04d}m{month.month:02d}"


def in_window(month: datetime, now: datetime) -> bool:
    current = month_start(now)
    return add_months(current, -MONTHS_BACK) <= month <= add_months(current, MONTHS_AHEAD)


def existing(conn: Connection) -> set[str]:
    rows = conn.execute(
        text("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'hits'::regclass")
    )
    return {r[0] for r in rows}


def ensure(conn: Connection, month: datetime) -> bool:
    """Create ``month``'s partition if missing (inside the caller's transaction); True if it was created."""
    name = partition_name(month)
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    if conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None:
        return False
    lo, hi = month, add_months(month, 1)
    bounds = {"lo": lo, "hi": hi}
    # Identifiers cannot be bound parameters; ``name`` is built from two integers above.
    create = f"CREATE TABLE {name} PARTITION OF hits FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
    stray = conn.execute(
        text("SELECT count(*) FROM hits_other WHERE first_seen >= :lo AND first_seen < :hi"), bounds
    ).scalar_one()
    if stray:
        conn.execute(text("ALTER TABLE hits DETACH PARTITION hits_other"))
        conn.execute(text(create))
        conn.execute(text(f"INSERT INTO {name} SELECT * FROM hits_other WHERE first_seen >= :lo AND first_seen < :hi"), bounds)
        conn.execute(text("DELETE FROM hits_other WHERE first_seen >= :lo AND first_seen < :hi"), bounds)
        conn.execute(text("ALTER TABLE hits ATTACH PARTITION hits_other DEFAULT"))
        log.info("created partition %s and moved %s hits into it from hits_other", name, stray)
    else:
        conn.execute(text(create))
        log.info("created partition %s", name)
    return True


def before(conn: Connection, cutoff: datetime) -> list[tuple[str, int]]:
    """What retention at ``cutoff`` (a month start) removes: each monthly partition wholly before it with
    its hit count, then ``hits_other`` with the count of its rows before it (when there are any)."""
    out: list[tuple[str, int]] = []
    for name in sorted(existing(conn)):
        m = _NAME.match(name)
        if m and add_months(datetime(int(m.group(1)), int(m.group(2)), 1, tzinfo=UTC), 1) <= cutoff:
            out.append((name, conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one()))
    stray = conn.execute(text("SELECT count(*) FROM hits_other WHERE first_seen < :c"), {"c": cutoff}).scalar_one()
    if stray:
        out.append(("hits_other", stray))
    return out


def drop_before(conn: Connection, cutoff: datetime) -> list[tuple[str, int]]:
    """Detach and drop every monthly partition wholly before ``cutoff`` (a month start); also purge
    ``hits_other`` rows before it. Returns what was removed, as :func:`before` lists it."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    removed = before(conn, cutoff)
    for name, _n in removed:
        if name != "hits_other":
            conn.execute(text(f"ALTER TABLE hits DETACH PARTITION {name}"))
            conn.execute(text(f"DROP TABLE {name}"))
            log.info("retention: dropped partition %s", name)
    conn.execute(text("DELETE FROM hits_other WHERE first_seen < :c"), {"c": cutoff})
    return removed
