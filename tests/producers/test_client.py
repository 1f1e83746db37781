"""``LlmbusClient`` waiting for its replies: in time, too late, and just at the limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from llmbus.errors import RequestTimeoutError
from llmbus.producers import LlmbusClient
from llmbus.producers.reply_router import Reply
from llmbus.schemas import ErrorReply
from tests.conftest import Bus


async def test_no_answer_in_time_raises_request_timeout(bus: Bus) -> None:
    # No worker consumes this test's topics: the request is published and never answered.
    async with bus.client(timeout_s=0.5) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="no final reply"):
            await client.chat("anyone there?", max_tokens=1)
        assert time.monotonic() - started >= 0.45  # it waited, not gave up early


async def test_a_reply_already_queued_is_taken_when_time_is_up() -> None:
    queue: asyncio.Queue[Reply] = asyncio.Queue()
    reply = ErrorReply(request_id="r1", code="cancelled", message="stopped")
    queue.put_nowait(reply)
    assert await LlmbusClient._next(queue, 0.0, "r1") is reply
    with pytest.raises(RequestTimeoutError):
        await LlmbusClient._next(queue, 0.0, "r1")
