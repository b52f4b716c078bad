"""Opening the central store for the console: the store's engine, with the console's tables created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from edge.central.web import data, tables


def _url(db: str) -> str:
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).resolve()}"


def open_engine(db: str) -> sa.Engine:
    url = _url(db)
    engine = sa.create_engine(url, future=True)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    data._md.create_all(engine)
    tables.metadata.create_all(engine)
    return engine
