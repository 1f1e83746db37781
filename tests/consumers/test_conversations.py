"""Conversation keys on real Kafka (stand-in engine): every turn on one partition, a
cancel that finds its turn, one busy conversation that cannot starve the others, and
partitions that stay with their worker across a rebalance."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from llmbus.bus import PartitionReader
from llmbus.consumers.worker import Worker
from llmbus.errors import RemoteError
from llmbus.schemas import ChatResult
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine

pytestmark = pytest.mark.integration


async def test_turns_share_a_partition_and_a_cancel_finds_its_turn(bus: Bus) -> None:
    s = bus.settings
    await bus.start_worker(EchoEngine(step_s=0.05))
    async with bus.client() as client:
        for turn in range(4):
            await client.chat(f"turn {turn}", conversation_id="conv-a", request_id=f"a-{turn}")
        # A long turn, cancelled by its id: the client sends the cancel with the turn's key.
        long = client.build_request(" ".join(["word"] * 200), conversation_id="conv-a")
        running = asyncio.create_task(_final(client, long))
        await asyncio.sleep(1.0)
        await client.cancel(long.request_id)
        with pytest.raises(RemoteError) as info:
            await running
        assert info.value.remote_code == "cancelled"

    partitions = set()
    for partition in range(s.request_partitions):
        async with PartitionReader(
            s.kafka_bootstrap, topic=s.requests_topic, partition=partition, client_id="check",
            from_beginning=True,
        ) as reader:  # fmt: skip
            if any(r.key == b"conv-a" for r in await reader.getmany(timeout_ms=1000)):
                partitions.add(partition)
    assert len(partitions) == 1, "every turn and the cancel on one partition"


async def test_a_busy_conversation_does_not_starve_another_on_its_partition(bus: Bus) -> None:
    await bus.start_worker(EchoEngine(step_s=0.05))
    async with bus.client() as client:
        await client.chat("ready?")  # the worker holds its partitions: no join in the timings
        # "busy" floods its partition; "quiet" comes after, on its own key.
        flood = [
            client.build_request("flood me now", conversation_id="busy", request_id=f"busy-{n}")
            for n in range(40)
        ]
        busy = [asyncio.create_task(_final(client, r)) for r in flood]
        await asyncio.sleep(0.3)
        quiet = await client.chat("hello there", conversation_id="quiet")
        quiet_done = quiet.finished_at
        results = await asyncio.gather(*busy)

    # At most two turns of one conversation ran at once (LLMBUS_CONVERSATION_CONCURRENCY)...
    spans = sorted(
        (r.created_at + timedelta(milliseconds=res.timings.queue_ms), res.finished_at)
        for r, res in zip(flood, results, strict=True)
    )
    overlap = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlap <= 2
    # ...so the quiet one was answered while the busy one still had turns waiting.
    assert quiet_done < max(res.finished_at for res in results)
    assert quiet.timings.queue_ms < 1000, f"queued {quiet.timings.queue_ms:.0f} ms"


async def _final(client: object, request: object) -> ChatResult:
    async for reply in client.send(request):  # type: ignore[attr-defined]
        if isinstance(reply, ChatResult):
            return reply
    raise AssertionError("no final")


async def test_partitions_stay_with_their_worker_across_a_rebalance(bus: Bus) -> None:
    total = 2 * bus.settings.request_partitions  # both lanes
    first = await bus.start_worker(EchoEngine(step_s=0.05), worker_id="w1")
    await _settled([first], total)
    second = await bus.start_worker(EchoEngine(step_s=0.05), worker_id="w2")
    await _settled([first, second], total)
    kept = {w: w.assignment() for w in (first, second)}
    for held in kept.values():  # balanced lane by lane: both workers serve both lanes
        assert sorted(tp.topic for tp in held).count(bus.settings.batch_topic) == 2
    third = await bus.start_worker(EchoEngine(step_s=0.05), worker_id="w3")
    await _settled([first, second, third], total)
    # Sticky: the first two keep what they had and give the newcomer only its share.
    for worker, before in kept.items():
        assert worker.assignment() <= before
        assert len(worker.assignment()) >= total // 3
    assert len(third.assignment()) >= total // 3


async def _settled(workers: list[Worker], total: int, timeout_s: float = 60) -> None:
    """Until every worker holds some partitions and together they hold all of them."""
    for _ in range(int(timeout_s / 0.2)):
        held = [w.assignment() for w in workers]
        if all(held) and sum(map(len, held)) == total == len(set().union(*held)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(workers)} workers never shared the {total} partitions")
