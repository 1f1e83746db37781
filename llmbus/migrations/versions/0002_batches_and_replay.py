"""Batch jobs, replay lineage and the indexes behind analysts' filters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "llmbus"
MESSAGES_TSV = "jsonb_to_tsvector('simple'::regconfig, messages, '[\"string\"]'::jsonb)"
"""Must match ``store.conversation_query.MESSAGES_TSV`` exactly, or the index is unused."""


def upgrade() -> None:
    # Append-only: a batch row never changes, its cancellation is a separate event row,
    # so the submitting role needs INSERT and SELECT only.
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("tenant_id", sa.String(128)),
        sa.Column("user_id", sa.String(128)),
        sa.Column("source", sa.Text),
        sa.Column("params", JSONB, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("batches_created_at", "batches", ["created_at"], schema=SCHEMA)
    op.create_table(
        "batch_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("batch_events_batch", "batch_events", ["batch_id"], schema=SCHEMA)
    op.add_column("requests", sa.Column("replay_of", sa.String(128)), schema=SCHEMA)
    op.create_index("requests_batch", "requests", ["batch_id"], schema=SCHEMA)
    op.create_index("requests_replay_of", "requests", ["replay_of"], schema=SCHEMA)
    op.create_index(
        "requests_messages_text",
        "requests",
        [sa.text(MESSAGES_TSV)],
        postgresql_using="gin",
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_index("requests_messages_text", "requests", schema=SCHEMA)
    op.drop_index("requests_replay_of", "requests", schema=SCHEMA)
    op.drop_index("requests_batch", "requests", schema=SCHEMA)
    op.drop_column("requests", "replay_of", schema=SCHEMA)
    op.drop_table("batch_events", schema=SCHEMA)
    op.drop_table("batches", schema=SCHEMA)
