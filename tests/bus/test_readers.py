"""Readers without a group start where they are told to, on a topic that already holds
records (real broker): the start-up path of every follower of a topic (control topic,
reply routers, dead-letter readers)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from llmbus.bus import (
    BusProducer,
    PartitionReader,
    Record,
    TopicPartition,
    ensure_topics,
    read_all,
    read_since,
)
from llmbus.consumers.batch_cancellations import BatchCancellations
from llmbus.schemas import BatchCancellation
from llmbus.stack.local_stack import LocalStack

pytestmark = pytest.mark.integration

ROUNDS = 5
"""The lost records came from a race inside the client; one start proves little."""

READ_LIMIT_S = 3.0
"""A bound on a read of a few records, not a timing: a read that fetched from the wrong
offset first waited out the broker's hold of that fetch (the readers' 5 s)."""


async def topic_with(stack: LocalStack, values: list[bytes]) -> tuple[str, BusProducer]:
    bootstrap = stack.kafka.bootstrap
    topic = f"readers-{uuid.uuid4().hex[:10]}"
    await ensure_topics(bootstrap, {topic: 1})
    producer = BusProducer(bootstrap, client_id="readers-test", max_request_bytes=1 << 20)
    await producer.start()
    for value in values:
        await producer.send(topic, value, [])
    return topic, producer


async def drain(reader: PartitionReader, want: int, *, rounds: int = 20) -> list[Record]:
    out: list[Record] = []
    for _ in range(rounds):  # up to ~10 s
        out += await reader.getmany(timeout_ms=500)
        if len(out) >= want:
            break
    return out


async def test_read_all_returns_every_record_to_the_end(stack: LocalStack) -> None:
    values = [f"v{i}".encode() for i in range(7)]
    topic, producer = await topic_with(stack, values)
    try:
        for _ in range(ROUNDS):
            # Within seconds, not the 5 s the broker would hold a fetch from the end: the
            # read fetches from where it starts only (see _assign_paused).
            async with asyncio.timeout(READ_LIMIT_S):
                records, end = await read_all(
                    stack.kafka.bootstrap, TopicPartition(topic, 0), client_id="t"
                )
            assert end == len(values)
            assert [r.value for r in records] == values
            assert [r.offset for r in records] == list(range(len(values)))
        # read_since from the epoch: the same records (the explicit-offset path).
        since = await read_since(stack.kafka.bootstrap, TopicPartition(topic, 0), 0, client_id="t")
        assert [r.value for r in since] == values
    finally:
        await producer.stop()


async def test_read_since_starts_at_the_first_record_written_since(stack: LocalStack) -> None:
    topic, producer = await topic_with(stack, [b"before-1", b"before-2"])
    try:
        await asyncio.sleep(0.05)  # the timestamps must tell the two groups apart
        since_ms = int(time.time() * 1000)
        await asyncio.sleep(0.05)
        for value in (b"after-1", b"after-2", b"after-3"):
            await producer.send(topic, value, [])
        for _ in range(ROUNDS):
            async with asyncio.timeout(READ_LIMIT_S):
                records = await read_since(
                    stack.kafka.bootstrap, TopicPartition(topic, 0), since_ms, client_id="t"
                )
            assert [r.value for r in records] == [b"after-1", b"after-2", b"after-3"]
            assert [r.offset for r in records] == [2, 3, 4]
        later = int(time.time() * 1000) + 60_000
        assert (
            await read_since(stack.kafka.bootstrap, TopicPartition(topic, 0), later, client_id="t")
            == []
        )
    finally:
        await producer.stop()


async def test_read_all_of_an_empty_partition(stack: LocalStack) -> None:
    topic, producer = await topic_with(stack, [])
    try:
        assert await read_all(stack.kafka.bootstrap, TopicPartition(topic, 0), client_id="t") == (
            [],
            0,
        )
    finally:
        await producer.stop()


async def test_partition_reader_from_beginning_and_from_end(stack: LocalStack) -> None:
    before = [f"old{i}".encode() for i in range(4)]
    topic, producer = await topic_with(stack, before)
    try:
        for _ in range(ROUNDS):
            async with PartitionReader(
                stack.kafka.bootstrap, topic=topic, partition=0, client_id="t", from_beginning=True
            ) as reader:
                # The records are there at start: the first read returns them, and does
                # not wait out a fetch from the end that the broker holds for 5 s.
                first = await reader.getmany(timeout_ms=int(READ_LIMIT_S * 1000))
                assert [r.value for r in first][:4] == before
        async with PartitionReader(
            stack.kafka.bootstrap, topic=topic, partition=0, client_id="t"
        ) as tail:
            # Sent right after start(): a reader at the end must see exactly these.
            await producer.send(topic, b"new", [])
            got = await drain(tail, 1)
            await asyncio.sleep(0.5)
            got += await tail.getmany(timeout_ms=500)
            assert [r.value for r in got] == [b"new"]
    finally:
        await producer.stop()


async def test_batch_cancellations_see_cancels_written_before_start(stack: LocalStack) -> None:
    cancels = [BatchCancellation(batch_id=f"batch_{i}") for i in range(3)]
    topic, producer = await topic_with(stack, [c.model_dump_json().encode() for c in cancels])
    # A malformed record on the control topic is skipped, not fatal.
    await producer.send(topic, b"{not json", [])
    seen_live: list[str] = []
    try:
        for _ in range(ROUNDS):
            async with BatchCancellations(
                stack.kafka.bootstrap, topic, seen_live.append, client_id="t"
            ) as followed:
                # Known at start-up, before any fetch of the worker's own.
                assert all(followed.is_cancelled(c.batch_id) for c in cancels)
                assert not followed.is_cancelled("batch_other")
                assert not followed.is_cancelled(None)
        assert seen_live == [], "cancels read at start-up are not reported as new"

        async with BatchCancellations(
            stack.kafka.bootstrap, topic, seen_live.append, client_id="t"
        ) as followed:
            await producer.send(
                topic, BatchCancellation(batch_id="batch_late").model_dump_json().encode(), []
            )
            for _ in range(40):  # up to ~20 s
                if followed.is_cancelled("batch_late"):
                    break
                await asyncio.sleep(0.5)
            assert followed.is_cancelled("batch_late")
            assert seen_live == ["batch_late"]
    finally:
        await producer.stop()
