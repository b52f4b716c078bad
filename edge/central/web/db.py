"""Opening the central store for the console: the store (with its migrations), then the console's own tables."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.exc import SQLAlchemyError

from edge.central.store import Store, StoreError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATE_LOCK = 0x65646377  # console processes opening one PostgreSQL database at once migrate one at a time


def migrate_console(engine: sa.Engine) -> None:
    """Bring the console's tables to the newest revision (their own Alembic version table)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot add the console's tables: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc


def open_store(db: str) -> Store:
    """The store at ``db`` (a SQLite path or postgresql://…), migrated, with the console's tables."""
    store = Store(db)
    migrate_console(store.engine)
    return store
