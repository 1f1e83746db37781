"""Which batches were cancelled: every worker follows the control topic.

Queued requests of a cancelled batch are answered ``cancelled`` without reaching the
engine; running ones are aborted through their ``RequestControl``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from pydantic import ValidationError

from llmbus.background import cancel_and_wait
from llmbus.bus import Kafka, PartitionReader, Record, TopicPartition, read_all
from llmbus.errors import BrokerUnavailableError, NotStartedError
from llmbus.schemas import BatchCancellation

log = logging.getLogger(__name__)

_RETRY_S = 1.0
"""Pause after a failed fetch: a broker restart takes seconds, a tight loop helps nobody."""


class BatchCancellations:
    def __init__(
        self, bootstrap: Kafka, topic: str, on_cancel: Callable[[str], None], *, client_id: str
    ) -> None:
        self._bootstrap = bootstrap
        self._tp = TopicPartition(topic, 0)
        self._on_cancel = on_cancel
        self._client_id = client_id
        self._cancelled: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def is_cancelled(self, batch_id: str | None) -> bool:
        self._started()
        return batch_id is not None and batch_id in self._cancelled

    async def start(self) -> None:
        """Read every cancellation so far before returning, so no request of an already
        cancelled batch is started; then follow new ones in the background."""
        records, end = await read_all(self._bootstrap, self._tp, client_id=self._client_id)
        for record in records:
            self._apply(record)
        reader = PartitionReader(
            self._bootstrap,
            topic=self._tp.topic,
            partition=self._tp.partition,
            client_id=self._client_id,
            start_offset=end,
        )
        await reader.start()
        self._task = asyncio.create_task(self._follow(reader))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def __aenter__(self) -> BatchCancellations:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _started(self) -> asyncio.Task[None]:
        if self._task is None:
            raise NotStartedError("BatchCancellations used before start()")
        return self._task

    async def _follow(self, reader: PartitionReader) -> None:
        try:
            while True:
                try:
                    # A cancel is returned as soon as it is fetched; the timeout only
                    # bounds an empty wait (stop() cancels this task anyway).
                    records = await reader.getmany(timeout_ms=5000)
                except BrokerUnavailableError as exc:
                    log.warning("control topic fetch failed, retrying: %s", exc)
                    await asyncio.sleep(_RETRY_S)
                    continue
                for record in records:
                    batch_id = self._apply(record)
                    if batch_id is not None:
                        log.info("batch %s cancelled", batch_id)
                        self._on_cancel(batch_id)
        finally:
            await reader.stop()

    def _apply(self, record: Record) -> str | None:
        try:
            cancel = BatchCancellation.model_validate_json(record.value or b"")
        except ValidationError:
            log.warning("ignoring malformed control record at offset %s", record.offset)
            return None
        self._cancelled.add(cancel.batch_id)
        return cancel.batch_id
