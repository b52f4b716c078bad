"""Alembic environment of the console's tables: run at open on the connection handed over, with a version
table of their own so the store's migration history and the console's never interleave."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, version_table="console_alembic_version")
with context.begin_transaction():
    context.run_migrations()
