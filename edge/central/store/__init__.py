"""The central store (SQLAlchemy Core + Alembic) over SQLite or PostgreSQL; API in docs/central.md."""

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
from edge.central.store.schema import DECISIONS, STATE_OF
from edge.central.store.store import STALE_AFTER_S, Store

__all__ = [
    "DECISIONS",
    "STALE_AFTER_S",
    "STATE_OF",
    "AuditEntry",
    "DeviceView",
    "Hit",
    "IngestResult",
    "Message",
    "Published",
    "Rejection",
    "Review",
    "ReviewError",
    "RevocationAck",
    "Store",
    "StoreError",
    "UnknownEventError",
]
