"""Prometheus metrics. Every set takes its CollectorRegistry from the caller, so each
process (and each test) decides where they are registered."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

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
        self.conversation_waiting = Gauge(
            "llmbus_conversation_waiting",
            "Requests waiting in the worker for an earlier turn of their conversation",
            registry=registry,
        )
        self.batch_slot_limit = Gauge(
            "llmbus_batch_slot_limit",
            "Batch-lane requests the worker admits now (lowered while interactive ones run)",
            registry=registry,
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
            "Created to first token, of streamed requests (vLLM's own histogram counts all)",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "llmbus_request_seconds",
            "Created to final",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.tpot_seconds = Histogram(
            "llmbus_time_per_output_token_seconds",
            "Mean time between output tokens of a request, after the first",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
            registry=registry,
        )
        self.lane_finals = Counter(
            "llmbus_lane_finals_total",
            "Finals by lane (interactive, batch) and outcome (ok, error, cancelled): batch "
            "progress across all batches",
            ["lane", "outcome"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "llmbus_consumer_lag_records",
            "Records not yet fetched, per assigned partition",
            ["topic", "partition"],
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
        self.tokens = Counter(
            "llmbus_audit_tokens_total",
            'Tokens of the finals stored, by tenant ("" for none), model and kind '
            "(prompt or completion)",
            ["tenant", "model", "kind"],
            registry=registry,
        )
        self.backlog = Gauge(
            "llmbus_audit_backlog_records",
            "Records on Kafka not yet read by the auditor, per partition",
            ["topic", "partition"],
            registry=registry,
        )


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "llmbus_batch_events_total", "Batch lifecycle events recorded", ["type"],
            registry=registry,
        )  # fmt: skip
        self.published = Counter(
            "llmbus_batch_events_published_total",
            "Batch events published to the events topic",
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "llmbus_webhook_attempts_total",
            "Webhook deliveries tried, by outcome (delivered, retry, gave_up)",
            ["outcome"],
            registry=registry,
        )
        self.leader = Gauge(
            "llmbus_notifier_leader", "1 while this notifier holds the lease", registry=registry
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


class TopicMetrics:
    """What the topic check (``bus/topic_check.py``) last saw of llmbus's topics. Worker,
    auditor and gateway each export it, so alert on ``max by (topic)``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.under_replicated = Gauge(
            "llmbus_topic_under_replicated_partitions",
            "Partitions with fewer in-sync replicas than replicas (checked every minute)",
            ["topic"],
            registry=registry,
        )
        self.offline = Gauge(
            "llmbus_topic_offline_partitions",
            "Partitions without a leader: nobody can produce to or fetch from them",
            ["topic"],
            registry=registry,
        )


class ForwardedRegistry:
    """Exports another registry's metrics through ours: vLLM registers its engine
    statistics (``vllm:*``) in prometheus_client's global registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()


def serve_metrics(registry: CollectorRegistry, port: int) -> ThreadingHTTPServer:
    """Serve ``registry`` on 127.0.0.1:<port>, always in Prometheus' text format 0.0.4.

    Not prometheus_client's ``start_http_server``: asked for OpenMetrics (as Prometheus 2
    asks), it rewrites the colon of ``vllm:*`` names to an underscore (client_python issue
    #1177), and the dashboard's and vLLM's own names would find nothing.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None  # a scrape a second would flood the logs

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
