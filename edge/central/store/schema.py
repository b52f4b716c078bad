"""The central schema (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

The Alembic migrations in ``migrations/versions`` create exactly these tables; this module is
what queries are written against. Times are stored in UTC (see :class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

DECISIONS = ("confirm", "reject", "not-this-person", "escalate")
# A hit's state is derived from its latest decision (no decision yet: candidate).
STATE_OF = {"confirm": "confirmed", "reject": "rejected", "not-this-person": "not-this-person", "escalate": "escalated"}
ID = String(64)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on both backends.

    SQLite has no time-zone type: values are kept as naive UTC text there (which sorts correctly).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _id_column(name: str = "id") -> Column[Any]:
    # BigInteger autoincrement: an IDENTITY on PostgreSQL; SQLite's rowid needs plain INTEGER.
    return Column(name, BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


metadata = MetaData()

hits = Table(
    "hits",
    metadata,
    Column("event_id", ID, nullable=False),
    # The device's own time: the partition key on PostgreSQL, so a redelivered hit always lands
    # in the same partition and conflicts with its first copy.
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("device_id", ID, nullable=False),
    Column("camera", ID, nullable=False),
    Column("entry_id", String(128), nullable=False),
    Column("label", Text),
    Column("score", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("watchlist_name", String(128), nullable=False),
    Column("watchlist_version", BigInteger, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),  # central receive time (what the console sorts by)
    Column("stored_at", UTCDateTime, nullable=False),  # when the ingest worker wrote it (latency figures)
    Column("payload", Text, nullable=False),
    PrimaryKeyConstraint("event_id", "first_seen", name="hits_pkey"),
    postgresql_partition_by="RANGE (first_seen)",
)
Index("hits_received_at", hits.c.received_at)
Index("hits_device", hits.c.device_id, hits.c.received_at)

reviews = Table(
    "reviews",
    metadata,
    _id_column(),
    Column("event_id", ID, nullable=False, index=True),
    Column("decision", String(32), nullable=False),
    Column("reviewer", String(128), nullable=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("note", Text, nullable=False, server_default=""),
    Column("previous_decision", String(32)),  # the decision this one changes (None: the first)
)

device_status = Table(
    "device_status",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("state", String(16), nullable=False),
    Column("sent_at", Text),  # the device's own ts (a retained status can be days old)
    Column("received_at", UTCDateTime, nullable=False),  # central receive time of this row's status
    # Central receive time of the last status the device sent live; a retained copy replayed by the
    # broker on subscribe does not count (it says nothing about when the device was last heard).
    Column("heard_at", UTCDateTime),
    Column("watchlist_name", String(128)),
    Column("watchlist_version", BigInteger),
    Column("outbox_depth", BigInteger),
    Column("outbox_dropped", BigInteger),
    Column("payload", Text, nullable=False),
)

status_history = Table(
    "status_history",
    metadata,
    _id_column(),
    Column("device_id", ID, nullable=False),
    Column("state", String(16), nullable=False),
    Column("sent_at", Text),
    Column("received_at", UTCDateTime, nullable=False),
    Column("payload", Text, nullable=False),
)
Index("status_history_device", status_history.c.device_id, status_history.c.received_at)

watchlist_acks = Table(
    "watchlist_acks",
    metadata,
    _id_column(),
    Column("device_id", ID, nullable=False),
    Column("watchlist", String(128), nullable=False),
    Column("version", BigInteger),
    Column("previous_version", BigInteger),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("sent_at", Text),
    Column("received_at", UTCDateTime, nullable=False),
    Column("kind", String(16), nullable=False, server_default="bundle"),  # bundle or revoke (migration 0002)
    Column("revoke_sequence", BigInteger),  # kind revoke: the revocation's sequence
    Column("removed", Integer),  # kind revoke: entries it removed from the device's list
)
Index("watchlist_acks_device", watchlist_acks.c.device_id, watchlist_acks.c.received_at)

audit_heads = Table(
    "audit_heads",
    metadata,
    Column("device_id", ID, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("chain_ok", Boolean, nullable=False),
    Column("sent_at", Text),
    Column("received_at", UTCDateTime, nullable=False),
    Column("problem", Text),  # why the chain looks wrong (went back, forked, device says broken), else None
)

# Every head ever received: how a fork (one seq, two heads) is recognised later.
audit_head_history = Table(
    "audit_head_history",
    metadata,
    Column("device_id", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("head", String(64), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("device_id", "seq", "head", name="audit_head_history_pkey"),
)

published_watchlists = Table(
    "published_watchlists",
    metadata,
    _id_column(),
    Column("name", String(128), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("published_at", UTCDateTime, nullable=False),
    Column("published_by", String(128), nullable=False),
)
Index("published_watchlists_name", published_watchlists.c.name, published_watchlists.c.version)

audit_log = Table(
    "audit_log",
    metadata,
    _id_column(),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default=""),
)

rejected = Table(
    "rejected",
    metadata,
    _id_column(),
    Column("topic", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("excerpt", Text, nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
