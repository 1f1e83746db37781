"""Routes records from the client's reply partition to the request that awaits them."""

from __future__ import annotations

import asyncio
import logging

from llmbus.background import cancel_and_wait
from llmbus.bus import PartitionReader
from llmbus.errors import BrokerUnavailableError, NotStartedError
from llmbus.schemas import ChatResult, ErrorReply, StreamDelta, WireDecodeError, decode
from llmbus.schemas.wire import H_REQUEST_ID, header

log = logging.getLogger(__name__)

Reply = StreamDelta | ChatResult | ErrorReply


class ReplyRouter:
    """One reader task; a queue per awaited request id.

    A request id gets at most one final: after it, the subscription is gone, so a
    duplicate final (a redelivered request answered twice) is dropped here.
    """

    def __init__(self, reader: PartitionReader) -> None:
        self._reader = reader
        self._queues: dict[str, asyncio.Queue[Reply]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._reader.start()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._reader.stop()

    def subscribe(self, request_id: str) -> asyncio.Queue[Reply]:
        """Call before publishing the request, so no reply can arrive unrouted."""
        if self._task is None:
            raise NotStartedError("ReplyRouter used before start()")
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._queues[request_id] = queue
        return queue

    def unsubscribe(self, request_id: str, queue: asyncio.Queue[Reply]) -> None:
        """Drop this subscription only: a newer one for the same id (a retry) stays."""
        if self._queues.get(request_id) is queue:
            del self._queues[request_id]

    async def _run(self) -> None:
        while True:
            try:
                # 1 s: the reader returns as soon as data arrives; this only bounds idling.
                records = await self._reader.getmany(timeout_ms=1000)
            except BrokerUnavailableError as exc:
                log.warning("reply fetch failed, retrying: %s", exc)
                await asyncio.sleep(1)
                continue
            for record in records:
                rid = header(record.headers, H_REQUEST_ID)
                queue = self._queues.get(rid) if rid else None
                if rid is None or queue is None:
                    continue  # another client's reply on the shared partition, or a late one
                try:
                    reply = decode(record.value, record.headers)
                except WireDecodeError as exc:
                    log.warning(
                        "undecodable reply dropped: %s", exc.reason, extra={"request_id": rid}
                    )
                    continue
                if isinstance(reply, (ChatResult, ErrorReply)):
                    del self._queues[rid]
                if not isinstance(reply, (StreamDelta, ChatResult, ErrorReply)):
                    continue
                queue.put_nowait(reply)
