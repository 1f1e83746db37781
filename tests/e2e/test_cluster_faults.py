"""Brokers die under load on a three-node KRaft cluster, and nothing is lost.

Every topic has three replicas, two of them in sync before a write is acknowledged
(producers use acks=all and idempotence). Each test prints ``sent / answered / lost /
duplicates / audit rows`` and leaves all three nodes running and in sync.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from llmbus.bus.admin import describe_topics
from llmbus.bus.topic_check import TopicProblem, TopicWatch
from llmbus.consumers.engine import Engine
from llmbus.metrics import TopicMetrics
from llmbus.settings import TopicLayout
from llmbus.stack.local_stack import LocalStack
from tests.conftest import Bus, open_bus
from tests.e2e.fault_load import busiest_leader, run_under_fault, wait_in_sync

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.fixture
async def cluster_bus(cluster_stack: LocalStack) -> AsyncIterator[Bus]:
    async with open_bus(cluster_stack, f"c{uuid.uuid4().hex[:10]}") as the_bus:
        await wait_in_sync(the_bus, cluster_stack.kafka)
        yield the_bus
        await wait_in_sync(the_bus, cluster_stack.kafka)


async def start_stand_ins(bus: Bus) -> None:
    """Two worker processes on the stand-in engine and an auditor; returns once both
    workers answer."""
    for worker_id in ("w1", "w2"):
        bus.spawn_worker_process(worker_id, step_s=0.01, max_num_seqs=32)
    await bus.start_auditor()
    async with bus.client(timeout_s=120) as client:
        await asyncio.gather(*(client.chat("probe") for _ in range(8)))


async def test_topics_are_replicated_three_times_with_two_in_sync(cluster_bus: Bus) -> None:
    state = await describe_topics(cluster_bus.settings.kafka, list(cluster_bus.settings.topics()))
    assert state.brokers == (1, 2, 3)
    assert set(state.topics) == set(cluster_bus.settings.topics())
    for topic in state.topics.values():
        assert topic.replicas == 3, topic
        assert topic.min_insync_replicas == 2, topic
    # Leadership is spread, so one broker's death moves only some partitions.
    leaders = {p.leader for t in state.topics.values() for p in t.partitions}
    assert len(leaders) > 1


async def test_kill_9_of_the_request_partitions_leader(cluster_bus: Bus) -> None:
    bus = cluster_bus
    cluster = bus.stack.kafka
    await start_stand_ins(bus)
    victim = await busiest_leader(bus, bus.settings.requests_topic)

    metrics = TopicMetrics(CollectorRegistry())
    watch = TopicWatch(bus.settings.kafka, bus.settings.topics(), TopicLayout(), metrics)
    seen: list[list[TopicProblem]] = []

    async def fault() -> None:
        await asyncio.sleep(4)  # load is flowing through the victim
        assert cluster.node(victim).kill()
        await asyncio.sleep(12)  # fenced after 6 s; the rest of the load without it
        seen.append(await watch.check())  # what the gauges say while it is away
        await wait_in_sync(bus, cluster)
        seen.append(await watch.check())

    outcome = await run_under_fault(bus, fault, name=f"kill -9 leader node {victim}")
    print("\n" + outcome.line())
    outcome.assert_nothing_lost()
    away, back = seen
    requests = bus.settings.requests_topic
    assert any(p.topic == requests and "under-replicated" in p.what for p in away), away
    assert metrics.under_replicated.labels(topic=requests)._value.get() == 0, "mended"
    assert back == []


async def test_rolling_restart_of_all_three_brokers(cluster_bus: Bus) -> None:
    bus = cluster_bus
    cluster = bus.stack.kafka
    await start_stand_ins(bus)

    async def fault() -> None:
        await asyncio.sleep(2)  # load flowing before the first node goes
        for node in cluster.nodes:
            await asyncio.to_thread(node.stop)  # controlled shutdown, as a rollout does
            await wait_in_sync(bus, cluster)  # starts it again, waits until caught up

    outcome = await run_under_fault(bus, fault, name="rolling restart")
    print("\n" + outcome.line())
    outcome.assert_nothing_lost()


async def test_kill_9_of_the_active_controller(cluster_bus: Bus) -> None:
    bus = cluster_bus
    cluster = bus.stack.kafka
    await start_stand_ins(bus)
    controller = cluster.active_controller()
    assert controller is not None

    async def fault() -> None:
        await asyncio.sleep(4)  # load flowing through the controller's node too
        assert cluster.node(controller).kill()
        await asyncio.sleep(12)  # a new quorum leader is elected within seconds; load goes on
        assert cluster.active_controller() not in (None, controller), "a new quorum leader"
        await wait_in_sync(bus, cluster)

    outcome = await run_under_fault(bus, fault, name=f"kill -9 controller node {controller}")
    print("\n" + outcome.line())
    outcome.assert_nothing_lost()


async def test_real_vllm_chats_while_a_broker_dies_and_returns(
    cluster_bus: Bus, engine: Engine
) -> None:
    bus = cluster_bus
    cluster = bus.stack.kafka
    await bus.start_worker(engine)
    await bus.start_auditor()
    async with bus.client(timeout_s=180) as client:
        await client.chat("probe", max_tokens=2)
    victim = await busiest_leader(bus, bus.settings.requests_topic)

    async def fault() -> None:
        await asyncio.sleep(3)  # chats in the engine when the broker dies
        assert cluster.node(victim).kill()
        await asyncio.sleep(10)  # fenced after 6 s; chats go on through the other two
        await wait_in_sync(bus, cluster)

    outcome = await run_under_fault(
        bus,
        fault,
        name=f"vLLM, kill -9 node {victim} and back",
        requests=100,
        rate_per_s=5,
        prompt="Name a colour.",
        max_tokens=8,
    )
    print("\n" + outcome.line())
    outcome.assert_nothing_lost()
