"""Batch lifecycle events (recorded before they are published) and tenants' webhooks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SCHEMA = "llmbus"
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Batches written before events existed are not announced: the first notifier would
    # otherwise flood every consumer with the whole history. New rows default to true.
    op.add_column(
        "batches",
        sa.Column("announce", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=SCHEMA,
    )
    op.alter_column("batches", "announce", server_default=sa.true(), schema=SCHEMA)
    op.create_table(
        "batch_notices",
        sa.Column("event_id", sa.String(32), primary_key=True),
        # Recording order: a batch's events recorded in one transaction share a timestamp.
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("batch_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("published_at", TZ),
        schema=SCHEMA,
    )
    op.create_index("batch_notices_batch", "batch_notices", ["batch_id"], schema=SCHEMA)
    op.create_index(
        "batch_notices_unpublished",
        "batch_notices",
        ["seq"],
        schema=SCHEMA,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "webhook_endpoints",
        sa.Column("endpoint_id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("event_types", JSONB),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("disabled_at", TZ),
        schema=SCHEMA,
    )
    op.create_index("webhook_endpoints_tenant", "webhook_endpoints", ["tenant_id"], schema=SCHEMA)
    op.create_table(
        "webhook_deliveries",
        sa.Column("event_id", sa.String(32), primary_key=True),
        sa.Column("endpoint_id", sa.String(40), primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("last_attempt_at", TZ),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ),
        schema=SCHEMA,
    )
    op.create_index(
        "webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    # The notifier runs as llmbus_writer: it marks what it published and delivered, and
    # updates nothing else. Analysts never see endpoint secrets.
    op.execute(
        "DO $$BEGIN "
        "IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_writer') THEN "
        "GRANT UPDATE (published_at) ON llmbus.batch_notices TO llmbus_writer; "
        "GRANT UPDATE (disabled_at) ON llmbus.webhook_endpoints TO llmbus_writer; "
        "GRANT UPDATE (attempts, last_status, last_error, last_attempt_at, next_attempt_at, "
        "delivered_at) ON llmbus.webhook_deliveries TO llmbus_writer; END IF; "
        "IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_reader') THEN "
        "REVOKE ALL ON llmbus.webhook_endpoints, llmbus.webhook_deliveries FROM llmbus_reader; "
        "END IF; END$$"
    )


def downgrade() -> None:
    op.drop_table("webhook_deliveries", schema=SCHEMA)
    op.drop_table("webhook_endpoints", schema=SCHEMA)
    op.drop_table("batch_notices", schema=SCHEMA)
    op.drop_column("batches", "announce", schema=SCHEMA)
