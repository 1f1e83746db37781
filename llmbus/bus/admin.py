"""Topic creation and description: the only place llmbus uses Kafka's admin API.

Creation is idempotent (existing topics are left as they are); what existing topics look
like is handed up as plain ``PartitionState`` rows for ``bus/topic_check.py`` to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from llmbus.bus.endpoint import Kafka, client_kwargs, describe
from llmbus.errors import BrokerUnavailableError, SetupError
from llmbus.settings import TopicLayout

_UNKNOWN_TOPIC = 3  # Kafka's UNKNOWN_TOPIC_OR_PARTITION
_TOPIC_EXISTS = 36  # TOPIC_ALREADY_EXISTS


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    """Node id of the leader; -1 while the partition is offline."""
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def offline(self) -> bool:
        return self.leader < 0

    @property
    def under_replicated(self) -> bool:
        return len(self.isr) < len(self.replicas)


@dataclass(frozen=True)
class TopicState:
    name: str
    partitions: tuple[PartitionState, ...]
    min_insync_replicas: int | None
    """The topic's ``min.insync.replicas`` (its own or the broker default)."""

    @property
    def replicas(self) -> int:
        return min((len(p.replicas) for p in self.partitions), default=0)


@dataclass(frozen=True)
class ClusterState:
    brokers: tuple[int, ...]
    topics: dict[str, TopicState]
    """Only the asked-for topics that exist."""
    errors: dict[str, int] = field(default_factory=dict)
    """Asked-for topics Kafka would not describe (an ACL, say), with its error code."""


@contextlib.asynccontextmanager
async def _admin(kafka: Kafka, what: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="llmbus-admin")
    try:
        await admin.start()
        yield admin
    except (KafkaError, TimeoutError) as exc:
        # TimeoutError: a request to a controller or broker that just died times out as
        # the builtin, not as a KafkaError.
        raise BrokerUnavailableError(f"cannot {what} on {describe(kafka)}: {exc!r}") from exc
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: Kafka,
    topics: dict[str, int],
    *,
    retention_ms: int | None = None,
    layout: TopicLayout | None = None,
) -> None:
    """Create each ``topic -> partitions`` that does not exist yet, replicated as
    ``layout`` says (default: min(3, brokers) replicas, two of them in sync)."""
    layout = layout or TopicLayout()
    async with _admin(bootstrap, "create topics") as admin:
        existing = set(await admin.list_topics())
        if missing := [name for name in topics if name not in existing]:
            brokers = len((await admin.describe_cluster())["brokers"])
            replicas = layout.replicas(brokers)
            configs = {"min.insync.replicas": str(layout.in_sync(replicas))}
            if retention_ms:
                configs["retention.ms"] = str(retention_ms)
            new = [
                NewTopic(name, topics[name], replication_factor=replicas, topic_configs=configs)
                for name in missing
            ]
            response = await admin.create_topics(new)
            _raise_refusals(response.to_object()["topic_errors"])
        await _wait_for_metadata(admin, set(topics))


def _raise_refusals(errors: list[dict[str, Any]]) -> None:
    """aiokafka returns each topic's error code instead of raising: a topic that another
    process created meanwhile is fine; any other refusal (too many replicas for the
    cluster, a policy, an ACL) is a setup error worth its own message."""
    refused = [
        f"{e['topic']}: Kafka error {e['error_code']} {e.get('error_message') or ''}".strip()
        for e in errors
        if e["error_code"] not in (0, _TOPIC_EXISTS)
    ]
    if refused:
        raise SetupError("topics not created: " + "; ".join(refused))


async def describe_topics(kafka: Kafka, names: list[str]) -> ClusterState:
    """The live brokers, and partitions, replicas, in-sync replicas and
    ``min.insync.replicas`` of each named topic that exists."""
    async with _admin(kafka, "describe topics") as admin:
        cluster = await admin.describe_cluster()
        described = await _describe_known(admin, names)
        found = [t for t in described if t["error_code"] == 0]
        in_sync = await _min_insync(admin, [t["topic"] for t in found])
    errors = {
        t["topic"]: t["error_code"] for t in described if t["error_code"] not in (0, _UNKNOWN_TOPIC)
    }
    topics = {
        t["topic"]: TopicState(
            t["topic"],
            tuple(
                PartitionState(
                    t["topic"], p["partition"], p["leader"], tuple(p["replicas"]), tuple(p["isr"])
                )
                for p in sorted(t["partitions"], key=lambda p: int(p["partition"]))
            ),
            in_sync.get(t["topic"]),
        )
        for t in found
    }
    brokers = tuple(sorted(b["node_id"] for b in cluster["brokers"]))
    return ClusterState(brokers, topics, errors)


async def _ask_until_known(
    names: list[str], ask: Callable[[list[str]], Awaitable[list[str]]]
) -> None:
    """Call ``ask`` with ``names``, then again with those it says a broker did not know.

    Each admin request goes to a random broker, and one that has not yet caught up with a
    new topic's metadata answers "unknown topic" for it while the broker that created it
    lists it; asked again (up to ~2 s), some broker knows. A topic that is really missing
    costs a background check those 2 s. Other refusals are final."""
    pending = list(names)
    for attempt in range(20):
        if attempt:
            await asyncio.sleep(0.1)
        pending = await ask(pending)
        if not pending:
            return


async def _describe_known(admin: AIOKafkaAdminClient, names: list[str]) -> list[Any]:
    """Each topic's metadata, a topic made a moment ago included."""
    described: dict[str, Any] = {}

    async def ask(pending: list[str]) -> list[str]:
        for topic in await admin.describe_topics(pending):
            described[topic["topic"]] = topic
        return [
            n
            for n in pending
            if described.get(n, {}).get("error_code", _UNKNOWN_TOPIC) == _UNKNOWN_TOPIC
        ]

    await _ask_until_known(names, ask)
    return list(described.values())


async def _min_insync(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}

    async def ask(pending: list[str]) -> list[str]:
        unknown = []
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in pending]
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                if resource["error_code"] == _UNKNOWN_TOPIC:
                    unknown.append(resource["resource_name"])
                for entry in resource["config_entries"]:
                    name = entry.get("config_names") or entry.get("config_name")
                    if name == "min.insync.replicas" and entry["config_value"]:
                        found[resource["resource_name"]] = int(entry["config_value"])
        return unknown

    await _ask_until_known(names, ask)
    return found


async def wait_for_brokers(kafka: Kafka, count: int, *, timeout_s: float = 90) -> None:
    """Until ``count`` brokers are registered: a node opens its port before the controller
    has it, and topics made meanwhile would get fewer replicas for good."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with _admin(kafka, "list brokers") as admin:
        while len((await admin.describe_cluster())["brokers"]) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise SetupError(f"fewer than {count} Kafka brokers after {timeout_s:.0f} s")
            await asyncio.sleep(0.5)


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: set[str]) -> None:
    # Creation is asynchronous on the broker; wait (up to ~10 s) until all are listed.
    for _ in range(100):
        if names <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
    raise BrokerUnavailableError(f"topics {sorted(names)} not visible after creation")
