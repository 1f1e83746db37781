"""``llmbus auditor``: requests and finals from Kafka into PostgreSQL, in batches.

The GPU path never waits on the database: workers only publish to Kafka, and this
separate consumer group copies what it reads into the audit trail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llmbus.background import cancel_and_wait
from llmbus.bus import GroupConsumer, Kafka, Record, TopicPartition
from llmbus.consumers.lag_gauge import report_lag
from llmbus.errors import BrokerUnavailableError, DatabaseUnavailableError
from llmbus.metrics import AuditMetrics
from llmbus.schemas import ChatRequest, ChatResult, ErrorReply, Kind, WireDecodeError, decode
from llmbus.schemas.wire import H_KIND, header
from llmbus.store.audit_rows import RowPolicy, request_row, result_row
from llmbus.store.audit_writer import AuditWriter, Stored

log = logging.getLogger(__name__)

_COMMIT_EVERY_S = 0.5
"""Offsets are committed this often, not per batch, so that a broker round trip never
holds up the next write; a crash re-reads at most this much (idempotent inserts)."""

_WRITES_IN_FLIGHT = 3
"""Batches written at once. Inserting is mostly the database's index upkeep, and each
commit waits on the disk: with batches overlapping, the database works while this process
decodes and while another batch commits. On ``make bench-audit`` (2 cores) one batch at a
time stored 8k rows/s; two, 11k; three, 12.9k; four, 11.6k. Each write holds two
connections (requests and finals)."""

_YIELD_EVERY = 32
"""Records decoded between two turns of the event loop (about 2 ms of work)."""

_MAX_BACKOFF_S = 10.0
"""Ceiling of the retry backoff while the database is down: recovers within 10 s of it
returning, without hammering it meanwhile."""


@dataclass(frozen=True)
class AuditorConfig:
    bootstrap: Kafka
    group_id: str
    topics: list[str] | None
    pattern: str | None
    batch_size: int
    flush_interval_s: float
    max_request_bytes: int
    policy: RowPolicy = field(default_factory=RowPolicy)
    """Redaction, content retention, and whether interactive embedding vectors are kept."""
    partitions_ahead_days: int = 7


class Auditor:
    """Commit order: a batch's rows are committed to PostgreSQL first; only then do its
    Kafka offsets become committable, and they are committed (the latest per partition)
    at most ``_COMMIT_EVERY_S`` later and at stop. A crash or outage in between re-reads
    the batch, and the idempotent insert keeps one row per request. Offsets of unstored
    records are never committed: while the database is down, the same batch is retried
    with backoff. Up to ``_WRITES_IN_FLIGHT`` batches are written at once while the next
    is decoded, and their offsets become committable in the order the batches were read."""

    def __init__(self, config: AuditorConfig, writer: AuditWriter, metrics: AuditMetrics) -> None:
        self._config = config
        self._writer = writer
        self._metrics = metrics
        self._stopping = asyncio.Event()
        self._stored: dict[TopicPartition, int] = {}
        """Offsets after the records stored in PostgreSQL and not committed yet."""
        self._consumer = GroupConsumer(
            config.bootstrap,
            group_id=config.group_id,
            topics=config.topics,
            pattern=config.pattern,
            client_id="llmbus-auditor",
            max_partition_fetch_bytes=config.max_request_bytes + 64 * 1024,
        )

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self._writer.start()
        lag: asyncio.Task[None] | None = None
        writes: deque[tuple[asyncio.Task[None], list[Record]]] = deque()
        """Batches being written, oldest first: the next batch is decoded meanwhile."""
        committing: asyncio.Task[None] | None = None
        commit_at = 0.0
        try:
            await self._consumer.start()
            lag = asyncio.create_task(report_lag(self._consumer, self._metrics.backlog))
            ahead_at = 0.0
            while not self._stopping.is_set():
                if time.monotonic() >= ahead_at:
                    ahead_at = time.monotonic() + await self._make_partitions_ahead()
                try:
                    records = await self._consumer.getmany(
                        timeout_ms=int(self._config.flush_interval_s * 1000),
                        max_records=self._config.batch_size,
                    )
                except BrokerUnavailableError as exc:
                    log.warning("fetch failed, retrying: %s", exc)
                    await asyncio.sleep(1)
                    continue
                if records:
                    rows = await self._rows(records)  # while earlier batches are written
                    while len(writes) >= _WRITES_IN_FLIGHT:
                        await self._finish_oldest(writes)
                    writes.append((asyncio.create_task(self._write(*rows)), records))
                while writes and writes[0][0].done():  # quiet times: no waiting for a full queue
                    await self._finish_oldest(writes)
                if time.monotonic() >= commit_at and (committing is None or committing.done()):
                    committing = asyncio.create_task(self._commit_stored())
                    commit_at = time.monotonic() + _COMMIT_EVERY_S
            while writes:
                await self._finish_oldest(writes)
            if committing is not None:
                await committing
            await self._commit_stored()
        finally:
            for task, _ in writes:
                await cancel_and_wait(task)
            await cancel_and_wait(committing)
            await cancel_and_wait(lag)
            await self._consumer.stop()
            await self._writer.stop()

    async def _make_partitions_ahead(self) -> float:
        """Seconds until the next call: hourly, so a day's partitions exist well before the
        day begins; a minute while the database is away (the write path makes a missing
        day's partition itself, so this is never in the way of storing)."""
        try:
            await self._writer.ensure_ahead(self._config.partitions_ahead_days)
        except DatabaseUnavailableError as exc:
            log.warning("partitions not made ahead yet: %s", exc)
            return 60.0
        return 3600.0

    async def _rows(
        self, records: list[Record]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Decode and build rows, handing the event loop back every few records: the
        previous batch's write needs it at each step (connection, statement, commit), and
        it overlaps this work only if it gets it."""
        req_rows: list[dict[str, Any]] = []
        res_rows: list[dict[str, Any]] = []
        for i, record in enumerate(records):
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if header(record.headers, H_KIND) == Kind.DELTA.value:
                continue  # deltas are not audited; the final carries the whole output
            try:
                message = decode(record.value, record.headers)
            except WireDecodeError:
                # Malformed requests are answered (and dead-lettered) by the worker.
                self._metrics.skipped.inc()
                continue
            if isinstance(message, ChatRequest):
                req_rows.append(
                    request_row(
                        message, record.topic, record.partition, record.offset, self._config.policy
                    )
                )
            elif isinstance(message, (ChatResult, ErrorReply)):
                res_rows.append(result_row(message, self._config.policy))
        return req_rows, res_rows

    async def _finish_oldest(self, writes: deque[tuple[asyncio.Task[None], list[Record]]]) -> None:
        """Wait for the oldest write, then mark its offsets committable: in the order read,
        so a committed offset never passes a record that is not stored."""
        task, records = writes[0]
        await task
        writes.popleft()
        for record in records:
            self._stored[record.tp] = max(self._stored.get(record.tp, 0), record.offset + 1)

    async def _write(self, req_rows: list[dict[str, Any]], res_rows: list[dict[str, Any]]) -> None:
        """Store rows, retrying while the database is away."""
        if not (req_rows or res_rows):
            return
        backoff = 0.5
        while True:
            try:
                with self._metrics.write_seconds.time():
                    stored = await self._writer.write(req_rows, res_rows)
                break
            except DatabaseUnavailableError as exc:
                self._metrics.retries.inc()
                log.warning("audit write failed (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
        self._count(stored)

    def _count(self, stored: Stored) -> None:
        self._metrics.rows.labels("requests").inc(stored.requests)
        self._metrics.rows.labels("results").inc(stored.results)
        for (tenant, model, kind), n in stored.tokens.items():
            if n:
                self._metrics.tokens.labels(tenant, model, kind).inc(n)

    async def _commit_stored(self) -> None:
        if not self._stored:
            return
        offsets, self._stored = self._stored, {}
        try:
            await self._consumer.commit(offsets)
        except BrokerUnavailableError as exc:
            # Stored but not committed: a re-read is harmless (idempotent inserts).
            log.warning("audit commit failed: %s", exc)
