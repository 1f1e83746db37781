"""The topic check's judgement (pure), and the watch on a real broker: warn or refuse."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid

import pytest
from prometheus_client import CollectorRegistry

from llmbus.bus import ensure_topics
from llmbus.bus.admin import ClusterState, PartitionState, TopicState
from llmbus.bus.topic_check import TopicWatch, find_problems
from llmbus.errors import SetupError, TopicLayoutError
from llmbus.metrics import TopicMetrics
from llmbus.settings import TopicLayout
from llmbus.stack.local_stack import LocalStack
from tests.conftest import Bus


def topic(name: str, partitions: int, replicas: int, *, isr: int | None = None,
          leader: int = 1, min_isr: int | None = 2) -> TopicState:  # fmt: skip
    nodes = tuple(range(1, replicas + 1))
    in_sync = nodes[: replicas if isr is None else isr]
    return TopicState(
        name,
        tuple(PartitionState(name, p, leader, nodes, in_sync) for p in range(partitions)),
        min_isr,
    )


def cluster(*topics: TopicState, brokers: int = 3) -> ClusterState:
    return ClusterState(tuple(range(1, brokers + 1)), {t.name: t for t in topics})


def test_a_topic_as_planned_has_no_problem() -> None:
    assert find_problems({"a": 4}, cluster(topic("a", 4, 3)), TopicLayout()) == []
    # More partitions than planned is fine: more workers can share the topic.
    assert find_problems({"a": 4}, cluster(topic("a", 8, 3)), TopicLayout()) == []


def test_one_broker_expects_one_replica_and_one_in_sync() -> None:
    state = cluster(topic("a", 4, 1, min_isr=1), brokers=1)
    assert find_problems({"a": 4}, state, TopicLayout()) == []


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (topic("a", 2, 3), "2 partitions, settings expect 4"),
        (topic("a", 4, 1, min_isr=1), "replication factor 1, settings expect 3"),
        (topic("a", 4, 3, min_isr=1), "min.insync.replicas 1, settings expect 2"),
        (topic("a", 4, 3, isr=2), "partitions [0, 1, 2, 3] are under-replicated"),
        (topic("a", 4, 3, leader=-1), "partitions [0, 1, 2, 3] have no leader"),
    ],
)
def test_each_shortfall_is_named(state: TopicState, words: str) -> None:
    problems = find_problems({"a": 4}, cluster(state), TopicLayout())
    assert len(problems) == 1, problems
    assert str(problems[0]).startswith(f"a: {words}")


def test_health_problems_pass_by_themselves_layout_problems_last() -> None:
    """Only lasting problems make "refuse" refuse: a broker away for a rolling restart
    must not keep restarted pods from starting."""
    state = ClusterState(
        (1, 2, 3),
        {"a": topic("a", 4, 3, isr=2), "b": topic("b", 2, 3)},
        errors={"c": 29},  # TOPIC_AUTHORIZATION_FAILED
    )
    problems = {p.topic: p for p in find_problems({"a": 4, "b": 4, "c": 1}, state, TopicLayout())}
    assert not problems["a"].lasting and "under-replicated" in problems["a"].what
    assert problems["b"].lasting and "2 partitions" in problems["b"].what
    assert not problems["c"].lasting and "Kafka error 29" in problems["c"].what


def test_a_missing_topic_and_an_explicit_replication_factor() -> None:
    layout = TopicLayout(replication_factor=2, min_insync_replicas=3)
    problems = find_problems({"a": 1, "b": 1}, cluster(topic("a", 1, 2)), layout)
    assert [str(p) for p in problems] == ["b: does not exist"]
    assert layout.in_sync(2) == 2, "never above the replicas: no write could succeed"


@pytest.mark.integration
async def test_watch_warns_or_refuses_on_a_real_broker(
    stack: LocalStack, caplog: pytest.LogCaptureFixture
) -> None:
    bootstrap = stack.kafka.bootstrap
    name = f"check-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, {name: 2})
    planned = {name: 4}
    metrics = TopicMetrics(CollectorRegistry())
    with caplog.at_level(logging.WARNING):
        async with TopicWatch(bootstrap, planned, TopicLayout(), metrics) as watch:
            assert [p.what for p in await watch.check()] == [
                "2 partitions, settings expect 4 (LLMBUS_REQUEST_PARTITIONS, "
                "LLMBUS_REPLY_PARTITIONS)"
            ]
    assert f"topic check: {name}: 2 partitions" in caplog.text
    assert metrics.under_replicated.labels(topic=name)._value.get() == 0
    with pytest.raises(TopicLayoutError, match=f"{name}: 2 partitions"):
        await TopicWatch(bootstrap, planned, TopicLayout(check="refuse")).start()
    # As planned, refuse starts quietly.
    async with TopicWatch(bootstrap, {name: 2}, TopicLayout(check="refuse")) as watch:
        assert await watch.check() == []
    # Kafka's refusal to create a topic is an error that names it, not a silent wait.
    with pytest.raises(SetupError, match=f"{name}-x: Kafka error 38"):
        await ensure_topics(bootstrap, {f"{name}-x": 1}, layout=TopicLayout(replication_factor=3))


@pytest.mark.integration
async def test_a_worker_process_refuses_or_warns_at_start_up(bus: Bus) -> None:
    """The wiring, end to end: ``llmbus worker`` planned for more request partitions than
    its topics have exits 2 naming them with ``refuse``, and serves with ``warn``."""
    planned = {"LLMBUS_REQUEST_PARTITIONS": "8"}  # the bus's topics have 4
    refusing = bus.spawn_worker_process(
        "refuser", extra_env={**planned, "LLMBUS_TOPIC_CHECK": "refuse"}
    )
    code = await asyncio.to_thread(refusing.wait, 120)  # imports and one look at Kafka
    out = refusing.stdout.read().decode() if refusing.stdout else ""
    assert code == 2, out[-2000:]
    assert f"{bus.settings.requests_topic}: 4 partitions, settings expect 8" in out
    warning = bus.spawn_worker_process("warner", extra_env=planned)
    async with bus.client(timeout_s=120) as client:  # the worker's start-up, on 2 cores
        assert (await client.chat("still served")).request_id
    assert warning.poll() is None
    os.killpg(warning.pid, signal.SIGKILL)
    out = warning.stdout.read().decode() if warning.stdout else ""
    assert f"topic check: {bus.settings.requests_topic}: 4 partitions, settings expect 8" in out
