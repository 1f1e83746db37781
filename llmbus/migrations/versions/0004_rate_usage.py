"""Gateway rate limits shared by all replicas: requests and tokens per key and minute.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SCHEMA = "llmbus"


def upgrade() -> None:
    op.create_table(
        "rate_usage",
        sa.Column("subject", sa.String(160), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    # Counters, not audit: the gateway's role increments them and sweeps old minutes, so it
    # gets UPDATE and DELETE here and nowhere else. Analysts have no use for them.
    op.execute(
        "DO $$BEGIN "
        "IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_writer') THEN "
        "GRANT SELECT, INSERT, UPDATE, DELETE ON llmbus.rate_usage TO llmbus_writer; END IF; "
        "IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_reader') THEN "
        "REVOKE ALL ON llmbus.rate_usage FROM llmbus_reader; END IF; END$$"
    )


def downgrade() -> None:
    op.drop_table("rate_usage", schema=SCHEMA)
