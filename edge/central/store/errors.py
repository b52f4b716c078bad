"""Store failures, one class per kind (all are EdgeError: the CLI prints them and exits 2)."""

from __future__ import annotations

from edge.errors import EdgeError


class StoreError(EdgeError):
    """The database cannot be opened or used (bad --db, unreachable server, missing file)."""


class UnknownEventError(StoreError):
    """No hit has this event id (or prefix), or the prefix names more than one hit."""


class ReviewError(StoreError):
    """A review decision is incomplete or not one of the known decisions."""
