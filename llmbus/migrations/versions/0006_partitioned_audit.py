"""The audit trail in daily partitions, with daily usage aggregates.

requests, results and gateway_calls become tables range-partitioned by day (UTC) of the
request's creation (a gateway call's time). Every existing row is kept: each table is
renamed aside, its replacement created with the same columns, grants and indexes, the
days present get their partitions, the rows are copied, and the old table is dropped, in
one transaction. A result gets its request's creation time (its finish time when no
request row exists).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SCHEMA = "llmbus"
MESSAGES_TSV = "jsonb_to_tsvector('simple'::regconfig, messages, '[\"string\"]'::jsonb)"
"""Must match ``store.conversation_query.MESSAGES_TSV`` exactly, or the index is unused."""

AHEAD_DAYS = 7
"""Partitions made from today on, as the auditor's default does."""

# SECURITY DEFINER: the writer role (auditor, gateway) may create the day's partitions
# through this one narrow door, without owning the tables or being able to drop anything.
# An advisory lock makes concurrent callers wait for each other instead of colliding.
ENSURE_FUNCTION = """
CREATE FUNCTION llmbus.ensure_audit_partitions(first_day date, days integer DEFAULT 1)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    day date;
    parent text;
    part text;
    made integer := 0;
BEGIN
    IF days < 1 OR days > 366 THEN
        RAISE EXCEPTION 'days must be between 1 and 366, not %', days;
    END IF;
    FOR day IN SELECT generate_series(first_day, first_day + days - 1, interval '1 day')::date
    LOOP
        FOREACH parent IN ARRAY ARRAY['requests', 'results', 'gateway_calls'] LOOP
            part := parent || '_p' || to_char(day, 'YYYYMMDD');
            CONTINUE WHEN to_regclass(format('llmbus.%I', part)) IS NOT NULL;
            PERFORM pg_advisory_xact_lock(hashtext('llmbus.audit_partitions'));
            CONTINUE WHEN to_regclass(format('llmbus.%I', part)) IS NOT NULL;
            EXECUTE format(
                'CREATE TABLE llmbus.%I PARTITION OF llmbus.%I FOR VALUES FROM (%L) TO (%L)',
                part, parent,
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC'
            );
            made := made + 1;
        END LOOP;
    END LOOP;
    RETURN made;
END
$fn$
"""

COPY_GRANTS = """
DO $$DECLARE g record; BEGIN
FOR g IN SELECT grantee, privilege_type FROM information_schema.role_table_grants
         WHERE table_schema = 'llmbus' AND table_name = '{old}' AND grantee <> current_user
LOOP
    EXECUTE format('GRANT %s ON llmbus.{new} TO %I', g.privilege_type, g.grantee);
END LOOP; END$$
"""


def _set_aside(table: str, indexes: list[str]) -> None:
    for index in indexes:
        op.drop_index(index, table, schema=SCHEMA)
    op.execute(f"ALTER TABLE {SCHEMA}.{table} RENAME TO {table}_unpartitioned")
    op.execute(
        f"ALTER TABLE {SCHEMA}.{table}_unpartitioned "
        f"RENAME CONSTRAINT {table}_pkey TO {table}_unpartitioned_pkey"
    )


def _replace(table: str) -> None:
    op.execute(COPY_GRANTS.format(old=f"{table}_unpartitioned", new=table))
    op.drop_table(f"{table}_unpartitioned", schema=SCHEMA)


def upgrade() -> None:
    _set_aside(
        "requests",
        [
            "requests_created_at",
            "requests_tenant_created",
            "requests_model_created",
            "requests_batch",
            "requests_replay_of",
            "requests_messages_text",
        ],
    )
    _set_aside("results", ["results_finished_at"])
    _set_aside("gateway_calls", ["gateway_calls_at", "gateway_calls_tenant_at"])

    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(128), nullable=False),
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
        sa.Column("replay_of", sa.String(128)),
        sa.PrimaryKeyConstraint("request_id", "created_at", name="requests_pkey"),
        schema=SCHEMA,
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index("requests_created_at", "requests", ["created_at"], schema=SCHEMA)
    op.create_index(
        "requests_tenant_created", "requests", ["tenant_id", "created_at"], schema=SCHEMA
    )
    op.create_index("requests_model_created", "requests", ["model", "created_at"], schema=SCHEMA)
    op.create_index("requests_batch", "requests", ["batch_id"], schema=SCHEMA)
    op.create_index("requests_replay_of", "requests", ["replay_of"], schema=SCHEMA)
    op.create_index(
        "requests_messages_text",
        "requests",
        [sa.text(MESSAGES_TSV)],
        postgresql_using="gin",
        schema=SCHEMA,
    )
    op.create_table(
        "results",
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
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
        sa.PrimaryKeyConstraint("request_id", "created_at", name="results_pkey"),
        schema=SCHEMA,
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index("results_finished_at", "results", ["finished_at"], schema=SCHEMA)
    op.create_table(
        "gateway_calls",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
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
        sa.PrimaryKeyConstraint("id", "at", name="gateway_calls_pkey"),
        schema=SCHEMA,
        postgresql_partition_by="RANGE (at)",
    )
    op.create_index("gateway_calls_at", "gateway_calls", ["at"], schema=SCHEMA)
    op.create_index("gateway_calls_tenant_at", "gateway_calls", ["tenant_id", "at"], schema=SCHEMA)

    op.execute(ENSURE_FUNCTION)
    op.execute("REVOKE ALL ON FUNCTION llmbus.ensure_audit_partitions(date, integer) FROM PUBLIC")
    op.execute(
        "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_writer') THEN "
        "GRANT EXECUTE ON FUNCTION llmbus.ensure_audit_partitions(date, integer) "
        "TO llmbus_writer; END IF; END$$"
    )
    op.execute(
        "SELECT llmbus.ensure_audit_partitions(day) FROM ("
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day FROM llmbus.requests_unpartitioned "
        "UNION SELECT (finished_at AT TIME ZONE 'UTC')::date FROM llmbus.results_unpartitioned "
        "UNION SELECT (at AT TIME ZONE 'UTC')::date FROM llmbus.gateway_calls_unpartitioned"
        ") AS days"
    )
    op.execute(
        f"SELECT llmbus.ensure_audit_partitions((now() AT TIME ZONE 'UTC')::date, {AHEAD_DAYS})"
    )
    op.execute(
        "INSERT INTO llmbus.requests (request_id, created_at, logged_at, model, messages, "
        "params, priority, deadline, tenant_id, user_id, batch_id, metadata, stream, "
        "kafka_topic, kafka_partition, kafka_offset, replay_of) "
        "SELECT request_id, created_at, logged_at, model, messages, params, priority, "
        "deadline, tenant_id, user_id, batch_id, metadata, stream, kafka_topic, "
        "kafka_partition, kafka_offset, replay_of FROM llmbus.requests_unpartitioned"
    )
    op.execute(
        "INSERT INTO llmbus.results SELECT r.request_id, "
        "COALESCE(q.created_at, r.finished_at), r.status, r.finished_at, r.logged_at, "
        "r.model, r.output, r.finish_reason, r.prompt_tokens, r.completion_tokens, "
        "r.queue_ms, r.ttft_ms, r.total_ms, r.worker_id, r.error_code, r.error_message, "
        "r.completion FROM llmbus.results_unpartitioned r "
        "LEFT JOIN llmbus.requests q ON q.request_id = r.request_id"
    )
    op.execute(
        "INSERT INTO llmbus.gateway_calls (id, at, key_id, tenant_id, user_id, method, path, "
        "status, request_id, model, latency_ms, client, error_code) "
        "SELECT id, at, key_id, tenant_id, user_id, method, path, status, request_id, model, "
        "latency_ms, client, error_code FROM llmbus.gateway_calls_unpartitioned"
    )
    op.execute(
        "SELECT setval(pg_get_serial_sequence('llmbus.gateway_calls', 'id'), "
        "(SELECT max(id) FROM llmbus.gateway_calls_unpartitioned)) "
        "WHERE EXISTS (SELECT FROM llmbus.gateway_calls_unpartitioned)"
    )
    for table in ("requests", "results", "gateway_calls"):
        _replace(table)

    # Counted by the auditor in the transaction that inserts the finals it counts, so a
    # redelivered batch (whose rows already exist) adds nothing. Kept past retention.
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("lane", sa.String(16), nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("day", "tenant_id", "user_id", "model", "lane"),
        schema=SCHEMA,
    )
    op.create_index("usage_daily_tenant_day", "usage_daily", ["tenant_id", "day"], schema=SCHEMA)
    op.execute(
        "INSERT INTO llmbus.usage_daily SELECT (r.created_at AT TIME ZONE 'UTC')::date, "
        "COALESCE(q.tenant_id, ''), COALESCE(q.user_id, ''), COALESCE(q.model, r.model, ''), "
        "CASE WHEN q.batch_id IS NULL THEN 'interactive' ELSE 'batch' END, count(*), "
        "count(*) FILTER (WHERE r.status = 'error'), COALESCE(sum(r.prompt_tokens), 0), "
        "COALESCE(sum(r.completion_tokens), 0) FROM llmbus.results r LEFT JOIN llmbus.requests q "
        "ON q.request_id = r.request_id AND q.created_at = r.created_at GROUP BY 1, 2, 3, 4, 5"
    )
    op.execute(
        "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_writer') THEN "
        "GRANT SELECT, INSERT, UPDATE ON llmbus.usage_daily TO llmbus_writer; END IF; END$$"
    )
    # Days whose prompts and outputs ``llmbus audit maintain`` has removed, so each day's
    # partition is rewritten once, not scanned again every night.
    op.create_table(
        "audit_content_purges",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.execute(
        "DO $$BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmbus_writer') THEN "
        "REVOKE INSERT ON llmbus.audit_content_purges FROM llmbus_writer; END IF; END$$"
    )


def downgrade() -> None:
    raise NotImplementedError(
        "0006 (partitioned audit tables) is not reversible in place; restore a backup taken "
        "before the upgrade"
    )
