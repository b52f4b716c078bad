"""Typed values the store takes and returns (what the CLI, the ingest workers and the web console use)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Kind = Literal["hit", "status", "ack", "audit"]


@dataclass(frozen=True)
class Message:
    """A validated device message, ready to store (see ``edge.central.ingest.parse``)."""

    kind: Kind
    device_id: str
    doc: dict[str, Any]
    received_at: datetime  # central receive time
    retained: bool = False  # replayed by the broker from its retained store, not sent just now


@dataclass(frozen=True)
class Rejection:
    """A message that failed validation: kept aside with the reason, never silently dropped."""

    topic: str
    reason: str
    excerpt: str
    received_at: datetime


@dataclass(frozen=True)
class IngestResult:
    kind: str  # hit, duplicate, status, ack, audit, rejected
    detail: str = ""


@dataclass(frozen=True)
class Review:
    id: int
    event_id: str
    decision: str  # confirm, reject, not-this-person, escalate
    reviewer: str
    ts: datetime
    reason: str
    note: str
    previous_decision: str | None  # the decision this one changed (None: the hit's first decision)


@dataclass(frozen=True)
class Hit:
    event_id: str
    device_id: str
    camera: str
    entry_id: str
    label: str | None
    score: float
    threshold: float
    first_seen: datetime
    last_seen: datetime
    watchlist_name: str
    watchlist_version: int
    received_at: datetime
    state: str  # candidate, or derived from the latest review: confirmed, rejected, not-this-person, escalated
    history: list[Review] = field(default_factory=list)  # oldest first

    @property
    def latest(self) -> Review | None:
        return self.history[-1] if self.history else None


@dataclass(frozen=True)
class Published:
    name: str
    version: int
    sha256: str
    expires_at: datetime | None
    published_at: datetime
    published_by: str


@dataclass(frozen=True)
class RevocationAck:
    """A device's answer to a signed revocation (``edge watchlist revoke``)."""

    sequence: int | None
    outcome: str  # applied or refused
    removed: int | None  # entries it removed from the device's list
    reason: str
    message: str


@dataclass(frozen=True)
class DeviceView:
    """One device in the fleet view."""

    device_id: str
    state: str  # as last reported (offline: the last will or a clean shutdown)
    online: bool  # reported online/degraded and heard live within the staleness limit
    heard_at: datetime | None  # central receive time of the last live status (None: only a retained one so far)
    received_at: datetime
    watchlist_name: str | None
    watchlist_version: int | None
    published_version: int | None  # what the operator published under that name (None: nothing published)
    outbox_depth: int | None
    outbox_dropped: int | None
    refused_ack: tuple[int | None, str, str] | None  # the latest bundle ack if it was a refusal: (version, reason, message)
    audit_problem: str | None
    revocation: RevocationAck | None = None  # the latest answer to a signed revocation

    @property
    def watchlist_behind(self) -> bool:
        return self.published_version is not None and self.watchlist_version != self.published_version


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: datetime
    actor: str
    action: str
    target: str
    detail: str
