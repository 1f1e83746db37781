"""Prometheus metrics. Every set takes its CollectorRegistry from the caller, so each
process (and each test) decides where they are registered."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "llmbus_requests_received_total", "Requests fetched", ["model"], registry=registry
        )
        self.completed = Counter(
            "llmbus_requests_completed_total", "Requests answered", ["model"], registry=registry
        )
        self.failed = Counter(
            "llmbus_requests_failed_total",
            "Requests answered with an error",
            ["model", "code"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "llmbus_dead_letters_total", "Poison records dead-lettered", registry=registry
        )
        self.inflight = Gauge(
            "llmbus_requests_inflight", "Requests handed to the engine", registry=registry
        )
        self.tokens_in = Counter(
            "llmbus_prompt_tokens_total", "Prompt tokens", ["model"], registry=registry
        )
        self.tokens_out = Counter(
            "llmbus_completion_tokens_total", "Completion tokens", ["model"], registry=registry
        )
        self.queue_seconds = Histogram(
            "llmbus_queue_seconds", "Created to engine", buckets=_LATENCY_BUCKETS, registry=registry
        )
        self.ttft_seconds = Histogram(
            "llmbus_time_to_first_token_seconds",
            "Created to first token",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "llmbus_request_seconds",
            "Created to final",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter("llmbus_audit_rows_total", "Rows written", ["table"], registry=registry)
        self.write_seconds = Histogram(
            "llmbus_audit_write_seconds", "One batch write", registry=registry
        )
        self.skipped = Counter(
            "llmbus_audit_skipped_total", "Undecodable records skipped", registry=registry
        )
        self.retries = Counter(
            "llmbus_audit_retries_total", "Writes retried (database away)", registry=registry
        )


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = Counter(
            "llmbus_gateway_calls_total",
            "HTTP calls by route and status",
            ["route", "status"],
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "llmbus_gateway_latency_seconds",
            "Time to the end of the response (streams included)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "llmbus_gateway_rate_limited_total", "Calls refused with 429", registry=registry
        )
