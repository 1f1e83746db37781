"""Which requests were already answered, shared by all workers of a model.

Every final is written to ``<prefix>.answered.<model>``, on the partition with the
number of its request's partition (the topics are co-partitioned), with the request's
offset in a header, sent together with the final to the requester (see
``RequestProcessor.process``). A worker that is assigned a request partition reads the
answered partition back from ``lookback_s`` ago and keeps the finals of requests at or
after the group's committed offset: those are exactly the requests a previous owner may
have answered without committing. When one of them is redelivered it is answered again
from this log, never recomputed.

The log also holds *engine-death marks*: a worker whose engine died writes one for each
request that was in the engine (see ``engine_gate.py``). A request with a mark is run
alone by the next owner; one that was alone in the engine at a second death is the
culprit and is refused without running.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from enum import Enum

from llmbus.bus import BusProducer, Kafka, Outgoing, Record, TopicPartition, read_since
from llmbus.consumers.recent_finals import Headers, RecentFinals
from llmbus.schemas.wire import header

H_SOURCE_OFFSET = "llmbus-source-offset"
H_ENGINE_DEATH = "llmbus-engine-death"
"""On an engine-death mark (instead of a final): how many requests were in the engine."""
H_DEATH_OFFSET = "llmbus-death-offset"
"""A mark's request offset. Not ``H_SOURCE_OFFSET``: a worker of an older version, which
knows no marks, skips records without that header instead of resending a mark as a final
(during a rolling upgrade)."""


class Suspicion(Enum):
    NONE = "none"
    SUSPECT = "suspect"
    """Was in the engine when it died: run it alone."""
    CULPRIT = "culprit"
    """Killed the engine again while running alone: refuse it."""


@dataclass
class _Deaths:
    marks: set[int] = field(default_factory=set)
    """Offsets of the marks in the log: a partition loaded again (after a rebalance) does
    not count the same death twice."""
    alone: bool = False


log = logging.getLogger(__name__)


class AnsweredLog:
    def __init__(
        self,
        producer: BusProducer,
        *,
        bootstrap: Kafka,
        topic: str,
        lookback_s: float,
    ) -> None:
        self._producer = producer
        self._bootstrap = bootstrap
        self._topic = topic
        self._recent = RecentFinals()
        """This worker's own finals and those loaded from previous owners."""
        self._lookback_s = lookback_s
        self._deaths: dict[str, _Deaths] = {}
        """Engine-death marks loaded from previous owners, by request id."""

    def get(self, request_id: str) -> tuple[bytes, Headers] | None:
        return self._recent.get(request_id)

    def suspicion(self, request_id: str) -> Suspicion:
        deaths = self._deaths.get(request_id)
        if deaths is None:
            return Suspicion.NONE
        # Two deaths, one of them alone: a single death alone may be the hardware's fault.
        if len(deaths.marks) >= 2 and deaths.alone:
            return Suspicion.CULPRIT
        return Suspicion.SUSPECT

    async def mark_engine_death(
        self, source: Record, request_id: str, *, in_engine: int, worker_id: str
    ) -> None:
        """Record (acknowledged) that ``request_id`` was in the engine when it died."""
        value = json.dumps(
            {"request_id": request_id, "worker_id": worker_id, "in_engine": in_engine}
        ).encode()
        headers = [
            (H_DEATH_OFFSET, str(source.offset).encode()),
            (H_ENGINE_DEATH, str(in_engine).encode()),
        ]
        await self._producer.send(
            self._topic, value, headers, key=request_id.encode(), partition=source.partition
        )

    def entry(self, source: Record, request_id: str, value: bytes, headers: Headers) -> Outgoing:
        """The log record of a final (sent by the caller, with the final itself)."""
        marked = [*headers, (H_SOURCE_OFFSET, str(source.offset).encode())]
        return Outgoing(
            self._topic, value, marked, key=request_id.encode(), partition=source.partition
        )

    def remember(self, request_id: str, value: bytes, headers: Headers) -> None:
        """Keep a final this worker logged, to resend it to a retry of its request."""
        self._recent.put(request_id, value, headers)

    async def load(self, request_tp: TopicPartition, committed: int | None) -> int:
        """Remember the finals of requests of ``request_tp`` at or after ``committed``."""
        since_ms = int((time.time() - self._lookback_s) * 1000)
        records = await read_since(
            self._bootstrap,
            TopicPartition(self._topic, request_tp.partition),
            since_ms,
            client_id="llmbus-answered-loader",
        )
        loaded = 0
        for record in records:
            offset = header(record.headers, H_SOURCE_OFFSET) or header(
                record.headers, H_DEATH_OFFSET
            )
            if record.key is None or record.value is None or offset is None:
                continue
            if committed is not None and int(offset) < committed:
                continue
            rid = record.key.decode()
            in_engine = header(record.headers, H_ENGINE_DEATH)
            if in_engine is not None:
                deaths = self._deaths.setdefault(rid, _Deaths())
                deaths.marks.add(record.offset)
                deaths.alone = deaths.alone or in_engine == "1"
                continue
            headers = [(k, v) for k, v in record.headers if k != H_SOURCE_OFFSET]
            self._recent.put(rid, record.value, headers)
            loaded += 1
        return loaded
