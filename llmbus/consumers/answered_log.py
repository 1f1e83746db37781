"""Which requests were already answered, shared by all workers of a model.

Every final is first written to ``<prefix>.answered.<model>``, on the partition with the
number of its request's partition (the topics are co-partitioned), with the request's
offset in a header; only then is it sent to the requester. A worker that is assigned a
request partition reads the answered partition back from ``lookback_s`` ago and keeps the
finals of requests at or after the group's committed offset: those are exactly the
requests a previous owner may have answered without committing. When one of them is
redelivered it is answered again from this log, never recomputed.
"""

from __future__ import annotations

import logging
import time

from llmbus.bus import BusProducer, Kafka, Record, TopicPartition, read_since
from llmbus.consumers.recent_finals import Headers, RecentFinals
from llmbus.schemas.wire import header

H_SOURCE_OFFSET = "llmbus-source-offset"

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

    def get(self, request_id: str) -> tuple[bytes, Headers] | None:
        return self._recent.get(request_id)

    async def record(self, source: Record, request_id: str, value: bytes, headers: Headers) -> None:
        """Write the final to the log (acknowledged) and remember it locally."""
        marked = [*headers, (H_SOURCE_OFFSET, str(source.offset).encode())]
        await self._producer.send(
            self._topic, value, marked, key=request_id.encode(), partition=source.partition
        )
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
            offset = header(record.headers, H_SOURCE_OFFSET)
            if record.key is None or record.value is None or offset is None:
                continue
            if committed is not None and int(offset) < committed:
                continue
            headers = [(k, v) for k, v in record.headers if k != H_SOURCE_OFFSET]
            self._recent.put(record.key.decode(), record.value, headers)
            loaded += 1
        return loaded
