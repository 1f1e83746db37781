"""Gateway: API keys (salted hashes only), their revocations, uploaded files, call audit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "llmbus"


def upgrade() -> None:
    # Append-only like batches: revoking a key inserts a row, so no role needs UPDATE.
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("salt", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128)),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "api_key_revocations",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "files",
        sa.Column("file_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "gateway_calls",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(32)),
        sa.Column("tenant_id", sa.String(128)),
        sa.Column("user_id", sa.String(128)),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("path", sa.String(256), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("model", sa.String(256)),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("client", sa.String(64)),
        sa.Column("error_code", sa.String(64)),
        schema=SCHEMA,
    )
    op.create_index("gateway_calls_at", "gateway_calls", ["at"], schema=SCHEMA)
    op.create_index("gateway_calls_tenant_at", "gateway_calls", ["tenant_id", "at"], schema=SCHEMA)
    op.create_index("batches_tenant", "batches", ["tenant_id", "created_at"], schema=SCHEMA)
    # Analysts read the trail, not credentials or other tenants' uploads. The local stack's
    # read-only role gets SELECT on every table by default privileges; take these back.
    op.execute(
        "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_reader') THEN "
        "REVOKE ALL ON llmbus.api_keys, llmbus.api_key_revocations, llmbus.files "
        "FROM llmbus_reader; END IF; END$$"
    )


def downgrade() -> None:
    op.drop_index("batches_tenant", "batches", schema=SCHEMA)
    op.drop_table("gateway_calls", schema=SCHEMA)
    op.drop_table("files", schema=SCHEMA)
    op.drop_table("api_key_revocations", schema=SCHEMA)
    op.drop_table("api_keys", schema=SCHEMA)
