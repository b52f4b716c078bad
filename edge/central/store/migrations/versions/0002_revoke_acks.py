"""Watchlist acks say what they answer: a bundle or a revocation (its sequence, entries removed).

Devices have sent these fields since signed revocations exist; the store dropped them, so an
operator could not tell which devices had applied an urgent removal.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("watchlist_acks", sa.Column("kind", sa.String(length=16), nullable=False, server_default="bundle"))
    op.add_column("watchlist_acks", sa.Column("revoke_sequence", sa.BigInteger(), nullable=True))
    op.add_column("watchlist_acks", sa.Column("removed", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("watchlist_acks") as batch:  # SQLite rebuilds the table to drop columns
        batch.drop_column("removed")
        batch.drop_column("revoke_sequence")
        batch.drop_column("kind")
