"""The audit tables. Everything a replay needs is kept: messages, parameters, model,
tenant/user, timestamps, output, finish reason, token usage, timings, worker id.

Migrations create these (``llmbus/migrations``); this module is the code's view of them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.expression import ColumnElement, FromClause

SCHEMA = "llmbus"
metadata = MetaData(schema=SCHEMA)

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), primary_key=True),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Column("model", String(256), nullable=False),
    Column("messages", JSONB, nullable=False),
    Column("params", JSONB, nullable=False),
    Column("priority", String(16), nullable=False),
    Column("deadline", DateTime(timezone=True)),
    Column("tenant_id", String(128)),
    Column("user_id", String(128)),
    Column("batch_id", String(128)),
    Column("replay_of", String(128)),
    Column("metadata", JSONB, nullable=False),
    Column("stream", String(5), nullable=False),
    Column("kafka_topic", String(249), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    postgresql_partition_by="RANGE (created_at)",
)
"""Partitioned by day of ``created_at`` (UTC): see ``store/audit_partitions.py``."""

results = Table(
    "results",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Column("model", String(256)),
    Column("output", Text),
    Column("finish_reason", String(16)),
    Column("prompt_tokens", Integer),
    Column("completion_tokens", Integer),
    Column("queue_ms", Float),
    Column("ttft_ms", Float),
    Column("total_ms", Float),
    Column("worker_id", String(128)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("completion", JSONB),
    postgresql_partition_by="RANGE (created_at)",
)
"""Partitioned like ``requests``, by its request's ``created_at`` (carried by the final), so
a request and its result share a day and join on (request_id, created_at)."""

batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("model", String(256), nullable=False),
    Column("total", Integer, nullable=False),
    Column("tenant_id", String(128)),
    Column("user_id", String(128)),
    Column("source", Text),
    Column("params", JSONB, nullable=False),
    Column("announce", Boolean, nullable=False, server_default=true()),
)
"""A batch job or a replay run; immutable once written. ``announce``: its lifecycle events
are published (false for batches from before events existed)."""

batch_events = Table(
    "batch_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("batch_id", String(128), nullable=False),
    Column("event", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
"""What happened to a batch after it was written: ``published``, ``cancel_requested``."""

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("salt", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    Column("tenant_id", String(128), nullable=False),
    Column("user_id", String(128)),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""Gateway keys: the secret itself is never stored, only a salted hash of it."""

api_key_revocations = Table(
    "api_key_revocations",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
)

files = Table(
    "files",
    metadata,
    Column("file_id", String(64), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("filename", String(256), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
"""Batch input files uploaded through the gateway (POST /v1/files)."""

gateway_calls = Table(
    "gateway_calls",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("at", DateTime(timezone=True), primary_key=True),
    Column("key_id", String(32)),
    Column("tenant_id", String(128)),
    Column("user_id", String(128)),
    Column("method", String(8), nullable=False),
    Column("path", String(256), nullable=False),
    Column("status", Integer, nullable=False),
    Column("request_id", String(128)),
    Column("model", String(256)),
    Column("latency_ms", Float, nullable=False),
    Column("client", String(64)),
    Column("error_code", String(64)),
    postgresql_partition_by="RANGE (at)",
)
"""One row per HTTP call to the gateway, refused ones included; partitioned by day."""

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("tenant_id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("model", String(256), primary_key=True),
    Column("lane", String(16), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
)
"""Finals per day (of the request's creation, UTC), tenant, user, model and lane ("" for
none), counted in the transaction that inserts them; kept past the trail's retention."""

audit_content_purges = Table(
    "audit_content_purges",
    metadata,
    Column("day", Date, primary_key=True),
    Column("purged_at", DateTime(timezone=True), nullable=False),
)
"""Days whose prompts and outputs were removed (content retention)."""

rate_usage = Table(
    "rate_usage",
    metadata,
    Column("subject", String(160), primary_key=True),
    Column("minute", BigInteger, primary_key=True),
    Column("requests", Integer, nullable=False),
    Column("tokens", BigInteger, nullable=False),
)
"""Requests and tokens admitted per gateway subject (key) and epoch minute, shared by every
gateway replica. Counters, not audit: the one table the writer role may UPDATE and DELETE."""

batch_notices = Table(
    "batch_notices",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False),
    Column("batch_id", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("published_at", DateTime(timezone=True)),
)
"""Batch lifecycle events, recorded before they are published to the events topic;
``published_at`` once Kafka acknowledged one (the notifier's only update)."""

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", String(40), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("event_types", JSONB(none_as_null=True)),  # SQL NULL: every event type
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
)
"""A tenant's webhook receiver. The signing secret must be readable to sign with it, so
the table is closed to the analysts' role."""

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("event_id", String(32), primary_key=True),
    Column("endpoint_id", String(40), primary_key=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
)
"""One event for one endpoint: attempts so far, the last answer, when to try again."""


def same_request(result: FromClause, request: FromClause) -> ColumnElement[bool]:
    """A result's join to its request: on the partition key too, so that each probe of the
    other table reads one day's partition, not every day's."""
    return and_(
        result.c.request_id == request.c.request_id,
        result.c.created_at == request.c.created_at,
    )


BATCH_SKEW = timedelta(days=1)
"""A batch's requests all carry the creation time taken just before its row's; a day either
side leaves room for any clock while keeping a batch's queries to a few days' partitions."""


def created_near(
    column: ColumnElement[datetime],
    first: ColumnElement[datetime],
    last: ColumnElement[datetime] | None = None,
) -> ColumnElement[bool]:
    """``column`` within ``BATCH_SKEW`` of the batches created from ``first`` to ``last``
    (scalar subqueries), or anywhere when they are NULL (requests that name a batch llmbus
    never recorded). PostgreSQL prunes partitions by them once they are known, before
    reading any."""
    return column.between(
        func.coalesce(first - BATCH_SKEW, literal(datetime.min.replace(tzinfo=UTC))),
        func.coalesce(
            (first if last is None else last) + BATCH_SKEW,
            literal(datetime.max.replace(tzinfo=UTC)),
        ),
    )


def near_batch(batch_id: str, *columns: ColumnElement[datetime]) -> list[ColumnElement[bool]]:
    """Each of ``columns`` (request and result creation times) within ``BATCH_SKEW`` of the
    batch's creation: what prunes a batch's queries to the days around it."""
    born = select(batches.c.created_at).where(batches.c.batch_id == batch_id).scalar_subquery()
    return [created_near(column, born) for column in columns]
