"""Databases for central-store tests: a SQLite file, or a fresh PostgreSQL database on the local server.

Every PostgreSQL test creates its own uniquely named database on 127.0.0.1:5432 (trust auth,
user postgres) and drops it afterwards; ``tools/test.sh`` starts the server where it is not running.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=10"
BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def pg_database(prefix: str = "edge_test") -> Iterator[str]:
    """A new empty PostgreSQL database (its URL), dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')  # name: our own hex, not input
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "postgresql":
        with pg_database() as url:
            yield url
    else:
        yield str(tmp_path / "central.db")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on SQLite and on PostgreSQL."""
    with database(str(request.param), tmp_path) as url:
        yield url
