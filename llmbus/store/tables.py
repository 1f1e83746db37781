"""The audit tables. Everything a replay needs is kept: messages, parameters, model,
tenant/user, timestamps, output, finish reason, token usage, timings, worker id.

Migrations create these (``llmbus/migrations``); this module is the code's view of them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "llmbus"
metadata = MetaData(schema=SCHEMA)

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
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
)

results = Table(
    "results",
    metadata,
    Column("request_id", String(128), primary_key=True),
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
)

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
    Column("at", DateTime(timezone=True), nullable=False),
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
)
"""One row per HTTP call to the gateway, refused ones included."""

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
