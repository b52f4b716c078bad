"""Opening the database named by ``--db``: a SQLite path or a PostgreSQL URL; migrations run at open."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from edge.central.store.errors import StoreError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATE_LOCK = 0x65646766  # several workers opening one PostgreSQL database at once migrate one at a time


def database_url(db: str | Path, *, must_exist: bool = False) -> URL:
    """The SQLAlchemy URL for ``--db``. ``must_exist``: refuse a SQLite file that is not there
    (export and review must not create an empty database from a misspelled name)."""
    s = str(db)
    if s == ":memory:":
        return URL.create("sqlite")
    if "://" in s:
        try:
            url = make_url(s)
        except ArgumentError as exc:
            raise StoreError(f"--db {s!r} is not a database URL: {exc}") from exc
        if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
            return url.set(drivername="postgresql+psycopg")
        if url.drivername == "sqlite" and url.database:
            return database_url(url.database, must_exist=must_exist)
        raise StoreError(f"--db {url.drivername}://… is not supported: use a SQLite file path or postgresql://…")
    path = Path(s)
    if not path.parent.is_dir():
        raise StoreError(f"--db {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise StoreError(f"--db {path} is a folder, not a database file")
    if must_exist and not path.exists():
        raise StoreError(f"--db {path}: no such database (check the name; it is created only by ingest)")
    return URL.create("sqlite", database=str(path))


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling begins lazily and deferred: two writers then fail with
    # "database is locked" instead of waiting. Take the write lock at BEGIN and wait for it.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def open_engine(url: URL, *, ping: bool = True) -> Engine:
    """``ping``: test each pooled PostgreSQL connection before use (a round trip per checkout). Ingest
    workers turn it off: a batch that fails on a dead connection is retried unacknowledged anyway."""
    if url.get_backend_name() == "sqlite":
        memory = not url.database
        kwargs: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)
        _sqlite_setup(engine)
    else:
        engine = create_engine(url, pool_pre_ping=ping, connect_args={"connect_timeout": 10})
    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a new database gets every table)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot open the database {engine.url.render_as_string(hide_password=True)}: {exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0]}") from exc  # fmt: skip
