"""The one settings object, read once by each entry point and passed down."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "llmbus"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmbus"


class KafkaEndpoint(BaseModel):
    """Where Kafka is and how to authenticate; every Kafka client of llmbus uses it."""

    model_config = ConfigDict(frozen=True)

    bootstrap: str
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None


class TopicLayout(BaseModel):
    """How llmbus makes its topics and what it expects of existing ones."""

    model_config = ConfigDict(frozen=True)

    replication_factor: int | None = None
    """None: min(3, brokers in the cluster)."""
    min_insync_replicas: int = 2
    check: Literal["warn", "refuse"] = "warn"

    def replicas(self, brokers: int) -> int:
        return self.replication_factor or min(3, max(1, brokers))

    def in_sync(self, replicas: int) -> int:
        # Above the replica count no write could ever be acknowledged.
        return max(1, min(self.min_insync_replicas, replicas))


class Settings(BaseSettings):
    """All of llmbus's configuration; environment variables are ``LLMBUS_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LLMBUS_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    """CA bundle for SSL/SASL_SSL; the system's trust store when unset."""
    database_url: SecretStr | None = None
    """The auditor's and analysts' connection (least-privilege role)."""
    migration_database_url: SecretStr | None = None
    """The schema owner's connection, used only to run migrations."""
    analyst_database_url: SecretStr | None = None
    """Read-only connection for analysts' queries and exports."""

    model: str = "smollm2-135m-instruct"
    """A served model name; the default model resolves to the cached converted SmolLM2."""
    model_path: str | None = None
    """Where the weights are (HF-style directory or hub name); defaults from ``model``."""

    dtype: str = "auto"
    """vLLM dtype. "auto": the model's own on GPU; on a CPU with AVX512-BF16, bfloat16 only
    if ``llmbus precision-check`` found the model keeps its eval score in it, else float32
    (``consumers/precision_eval.py``); the worker logs its choice and the reason."""

    runner: Literal["auto", "generate", "pooling"] = "auto"
    """vLLM's model runner: "auto" picks it from the model's architecture (an embedding
    model such as all-MiniLM-L6-v2 gets the pooling runner and serves ``/v1/embeddings``;
    a chat model the generating one); "pooling" embeds with a generative model."""

    engine_executor: Literal["auto", "uni", "mp"] = "auto"
    """Where vLLM runs the model: "uni" in its engine process, "mp" in a process of its own
    (vLLM's choice on a CPU, which keeps one core from computing). "auto": "uni" on a CPU
    with at most 4 usable cores (1.7x the throughput on 2), vLLM's own choice elsewhere
    (``consumers/engine_executor.py``)."""

    topic_prefix: str = "llmbus"
    request_partitions: int = 4
    reply_partitions: int = 16
    reply_topic_pattern: str | None = None
    """Topics a worker may write a request's answer to (a regular expression matched
    against the whole name). A request naming any other is dead-lettered unanswered:
    without this, anyone who may produce a request could make workers write into any topic
    they can reach. Default: llmbus's own, ``<prefix>.replies`` and ``<prefix>.replies.*``
    (results topics of pipelines; they must exist: workers do not create topics)."""

    state_dir: Path = Field(default_factory=default_state_dir)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    postgres_port: int = 15432
    kafka_brokers: int = Field(default=1, ge=1, le=9)
    """Nodes of the local Kafka ``llmbus up`` starts (``--brokers``): one for the demo,
    three for replicated topics that survive a broker's death."""

    topic_replication_factor: int | None = Field(default=None, ge=1)
    """Replicas of each topic llmbus creates. None: min(3, brokers in the cluster)."""
    topic_min_insync_replicas: int = Field(default=2, ge=1)
    """``min.insync.replicas`` of the topics llmbus creates (at most their replicas).
    Producers use acks=all, so an acknowledged record is on this many brokers: with 3
    replicas and 2, any one broker can die without losing an acknowledged request (with 2
    brokers, 2 replicas and 2 in sync, a broker's death stops writes instead)."""
    topic_check: Literal["warn", "refuse"] = "warn"
    """What workers, auditor and gateway do at start-up when an existing topic has fewer
    partitions or replicas (or a lower min.insync.replicas) than the settings ask: log a
    warning, or refuse to start (a non-zero exit; on Kubernetes the pod is retried until
    the topics are mended). Under-replicated or leaderless partitions only warn: they
    pass by themselves, as during a rolling restart of the brokers."""

    metrics_port: int | None = None
    """Serve Prometheus metrics on 127.0.0.1:<port> when set."""
    log_level: str = "INFO"
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop every command runs on. uvloop (as ``vllm serve`` runs) takes less CPU
    per Kafka record and per request than asyncio's own loop, CPU that a worker shares with
    its engine; "asyncio" falls back to the standard library's."""

    worker_id: str | None = None
    max_num_seqs: int = 64
    """vLLM's batch size; the worker keeps this many requests in flight to fill it."""
    max_model_len: int = 2048
    """Context window given to vLLM; prompts longer than this get context_length_exceeded."""
    max_num_batched_tokens: int | None = None
    """Prompt tokens vLLM computes per engine step (chunked prefill). None: vLLM's default
    (2048 on a CPU). Smaller steps let a short prompt's first token in sooner behind a long
    one (a warm conversation turn behind a cold one), at some cost in prefill throughput;
    the figures are in docs/benchmarks.md (affinity)."""
    max_request_bytes: int = 1_000_000
    """Kafka messages above this are refused before decoding (protects worker memory)."""
    commit_interval_s: float = 0.5
    """How often finished offsets are committed: a trade between redelivery on crash and
    commit traffic; 0.5 s keeps redelivery small without a commit per request."""
    shutdown_grace_s: float = 30.0
    """On SIGTERM, how long in-flight requests may finish before the worker gives up."""
    answered_lookback_s: float = 600.0
    """How far back a worker reads the answered log when it is assigned a partition: must
    exceed the longest time a request can be in flight (queue + generation)."""
    conversation_concurrency: int = 2
    """Requests of one conversation (one Kafka key) a worker runs at once; the rest wait in
    the worker, holding no engine slot, so one busy conversation cannot starve the others
    on its partition (``consumers/conversation_queue.py``)."""
    max_n: int = 8
    """Choices one request may ask for (OpenAI's ``n``): each is a sequence in the engine's
    batch, so a large n lets one caller take many slots at once."""
    tool_call_parser: str | None = "hermes"
    """vLLM's parser for ``tool_choice: auto`` (``vllm serve --tool-call-parser``): the
    format the served model writes tool calls in. ``hermes`` (``<tool_call>{json}``) suits
    models trained on it and the default model's prompt; empty disables auto tool choice
    (named and required tool choices are enforced by structured outputs and need none)."""
    kv_cache_gib: int = 2
    """KV cache for vLLM's CPU build (VLLM_CPU_KVCACHE_SPACE); ignored on GPU."""

    batch_reserved_slots: int | None = None
    """Engine slots batch traffic may never take, so an interactive request joins vLLM's
    running batch at its next step even behind a full batch backlog. Default: an eighth
    of ``max_num_seqs`` (at least 1)."""

    interactive_slowdown: float = 1.25
    """How much slower than alone an interactive request's tokens may come while batch work
    shares the engine. While interactive requests run (and ``interactive_hold_s`` after),
    the batch lane is capped to the sequences that keep within it, from the engine's
    measured step cost per sequence; batch throughput drops meanwhile (the trade). 1 or
    less: no cap beyond ``batch_reserved_slots``. See ``consumers/batch_throttle.py``."""
    interactive_hold_s: float = 5.0
    """How long the cap outlives the last interactive request: a chat's next turn or a
    service's next call usually comes within seconds, and batch sequences admitted in the
    gap would slow it for their whole length."""

    audit_batch_size: int = 500
    audit_flush_interval_s: float = 0.5
    """The auditor writes at least this often so rows appear within a second."""
    audit_store_vectors: bool = False
    """Keep interactive requests' embedding vectors in the audit trail (a vector is
    larger than its text and rarely read again; each is recorded by its length). A batch
    job's vectors are always kept: its output file is made from them."""
    audit_retention_days: int | None = Field(default=None, ge=1)
    """Whole days of audit trail kept (requests, results, gateway calls); older daily
    partitions are dropped whole by ``llmbus audit maintain``. None keeps everything.
    The daily usage aggregates are kept regardless."""
    audit_content_retention_days: int | None = Field(default=None, ge=1)
    """Days after which prompts and outputs are removed from the trail while metadata,
    timings and token counts stay. None keeps them for the full retention."""
    audit_partitions_ahead_days: int = Field(default=7, ge=1, le=60)
    """Daily partitions made ahead of time: a week lets the maintenance job stop for days
    without the auditor ever creating a partition on its hot path."""
    redact: bool = False
    """Replace e-mail addresses, phone numbers, payment cards, IBANs and IP addresses (and
    ``redact_patterns``) by typed placeholders before the audit trail stores a request or
    an answer, and in every log line. The model still sees the original."""
    redact_patterns: dict[str, str] = Field(default_factory=dict)
    """Extra detectors, placeholder name to regular expression, e.g.
    ``{"EMPLOYEE_ID": "E[0-9]{6}"}`` gives ``[EMPLOYEE_ID]``."""

    notifier_poll_s: float = 1.0
    """How often ``llmbus notifier`` looks for batch status changes and due webhooks: an
    event follows its change within about this long."""
    webhook_retry_s: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0],
        min_length=1,
    )
    """Waits before each webhook retry (Standard Webhooks' advice: quick at first, then
    for hours, about 10 h in all); one attempt more than entries, then it gives up."""
    webhook_timeout_s: float = 10.0
    """A receiver should answer at once and work later; a slower one is retried."""

    gateway_host: str = "127.0.0.1"
    """Loopback unless told otherwise: exposing the gateway is a deliberate act."""
    gateway_port: int = 8080
    gateway_tls_cert: Path | None = None
    gateway_tls_key: Path | None = None
    """With both set the gateway serves HTTPS only, TLS 1.2 or newer."""
    gateway_models: list[str] = Field(default_factory=list)
    """Generating models the gateway offers (GET /v1/models); default: ``model``."""
    gateway_embedding_models: list[str] = Field(default_factory=list)
    """Embedding models the gateway offers on ``/v1/embeddings`` (and lists in GET
    /v1/models), e.g. ``["all-minilm-l6-v2"]``; each needs workers of its own."""
    gateway_max_body_bytes: int = 1_000_000
    """Larger request bodies get 413 before they are read into memory."""
    gateway_max_messages: int = 128
    gateway_max_tokens: int = 4096
    """Upper bound on a request's max_tokens (one request cannot hold the engine for long)."""
    gateway_default_rpm: int = 600
    gateway_default_tpm: int = 200_000
    """Per-key limits when a key was created without its own."""
    gateway_shared_rate_limits: bool = True
    """Count limits in PostgreSQL, shared by every gateway replica (one short transaction
    per call); off, each replica limits on its own."""
    gateway_key_cache_s: float = 30.0
    """How long a verified key is trusted without asking PostgreSQL again: a revocation
    takes effect within this time, and the database sees one lookup per key per window."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_tenant_claim: str = "tenant"
    jwt_user_claim: str = "sub"

    publish_timeout_s: float = 10.0
    """How long a client waits for Kafka to acknowledge a request before it reports the bus
    unreachable (the gateway answers 503): a healthy broker acknowledges in milliseconds,
    and a caller is better served by a prompt error than by a hang."""
    request_timeout_s: float = 300.0
    """Client-side wait for a final reply when the request has no deadline."""

    @property
    def kafka(self) -> KafkaEndpoint:
        return KafkaEndpoint(
            bootstrap=self.kafka_bootstrap,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=self.kafka_ssl_cafile,
        )

    @property
    def topic_layout(self) -> TopicLayout:
        return TopicLayout(
            replication_factor=self.topic_replication_factor,
            min_insync_replicas=self.topic_min_insync_replicas,
            check=self.topic_check,
        )

    def served_models(self) -> list[str]:
        return self.gateway_models or [self.model]

    @property
    def requests_topic(self) -> str:
        return requests_topic(self.topic_prefix, self.model)

    @property
    def batch_topic(self) -> str:
        """The batch lane of the model: batch jobs and replays, served behind interactive."""
        return batch_topic(self.topic_prefix, self.model)

    def topics(self) -> dict[str, int]:
        """The topics this configuration uses, with their partition counts."""
        return {
            self.requests_topic: self.request_partitions,
            self.batch_topic: self.request_partitions,
            self.replies_topic: self.reply_partitions,
            self.dead_letter_topic: 1,
            self.answered_topic: self.request_partitions,
            self.batch_answered_topic: self.request_partitions,
            self.control_topic: 1,
            self.events_topic: 1,
        }

    @property
    def audit_pattern(self) -> str:
        """The auditor's subscription: both lanes of every model, and every topic workers
        may reply to (so a pipeline's results topic is audited like the replies topic)."""
        prefix = re.escape(self.topic_prefix)
        return rf"^(?:{prefix}\.(?:requests|batch)\..+|(?:{self.reply_topics}))$"

    @property
    def reserved_slots(self) -> int:
        if self.batch_reserved_slots is not None:
            return self.batch_reserved_slots
        return max(1, self.max_num_seqs // 8)

    @property
    def worker_group(self) -> str:
        """All workers of one model share this consumer group."""
        return f"{self.topic_prefix}-worker-{self.model}"

    @property
    def replies_topic(self) -> str:
        return f"{self.topic_prefix}.replies"

    @property
    def reply_topics(self) -> str:
        """``reply_topic_pattern``, or the default: llmbus's own reply topics."""
        if self.reply_topic_pattern:
            return self.reply_topic_pattern
        return rf"{re.escape(self.topic_prefix)}\.replies(\..+)?"

    @property
    def events_topic(self) -> str:
        """Batch lifecycle events (``batch.completed``, ...), key: the batch id."""
        return f"{self.topic_prefix}.events"

    @property
    def answered_topic(self) -> str:
        """Co-partitioned with the request topic (see consumers/answered_log.py)."""
        return f"{self.topic_prefix}.answered.{_safe(self.model)}"

    @property
    def batch_answered_topic(self) -> str:
        """The batch lane's answered log, co-partitioned with the batch topic."""
        return f"{self.topic_prefix}.answered-batch.{_safe(self.model)}"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}.dead-letter"

    @property
    def control_topic(self) -> str:
        """Batch cancellations, read by every worker from the beginning."""
        return f"{self.topic_prefix}.control"


def _safe(model: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in model)


def requests_topic(prefix: str, model: str) -> str:
    """One request topic per served model, so a worker group serves exactly one model."""
    return f"{prefix}.requests.{_safe(model)}"


def batch_topic(prefix: str, model: str) -> str:
    return f"{prefix}.batch.{_safe(model)}"
