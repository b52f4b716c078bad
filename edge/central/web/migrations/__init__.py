"""Alembic migrations of the console's own tables (their own version table, after the store's)."""
