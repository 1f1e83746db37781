"""Audit tables: requests and results.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "llmbus"


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("messages", JSONB, nullable=False),
        sa.Column("params", JSONB, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True)),
        sa.Column("tenant_id", sa.String(128)),
        sa.Column("user_id", sa.String(128)),
        sa.Column("batch_id", sa.String(128)),
        sa.Column("metadata", JSONB, nullable=False),
        sa.Column("stream", sa.String(5), nullable=False),
        sa.Column("kafka_topic", sa.String(249), nullable=False),
        sa.Column("kafka_partition", sa.Integer, nullable=False),
        sa.Column("kafka_offset", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("requests_created_at", "requests", ["created_at"], schema=SCHEMA)
    op.create_index(
        "requests_tenant_created", "requests", ["tenant_id", "created_at"], schema=SCHEMA
    )
    op.create_index("requests_model_created", "requests", ["model", "created_at"], schema=SCHEMA)
    op.create_table(
        "results",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("output", sa.Text),
        sa.Column("finish_reason", sa.String(16)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("queue_ms", sa.Float),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("total_ms", sa.Float),
        sa.Column("worker_id", sa.String(128)),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("completion", JSONB),
        schema=SCHEMA,
    )
    op.create_index("results_finished_at", "results", ["finished_at"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("results", schema=SCHEMA)
    op.drop_table("requests", schema=SCHEMA)
