"""Topic creation and description: the only place llmbus uses Kafka's admin API.

Creation is idempotent (existing topics are left as they are); what existing topics look
like is handed up as plain ``PartitionState`` rows for ``bus/topic_check.py`` to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from llmbus.bus.endpoint import Kafka, client_kwargs, describe
from llmbus.errors import BrokerUnavailableError
from llmbus.settings import TopicLayout

_UNKNOWN_TOPIC = 3  # Kafka's UNKNOWN_TOPIC_OR_PARTITION


@dataclass(frozen=True)
class PartitionState:
    topic: str
    partition: int
    leader: int
    """Node id of the leader; -1 while the partition is offline."""
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


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


@contextlib.asynccontextmanager
async def _admin(kafka: Kafka, what: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_kwargs(kafka), client_id="llmbus-admin")
    try:
        await admin.start()
        yield admin
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot {what} on {describe(kafka)}: {exc}") from exc
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
            # Another process may create one between list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        await _wait_for_metadata(admin, set(topics))


async def describe_topics(kafka: Kafka, names: list[str]) -> ClusterState:
    """The live brokers, and partitions, replicas, in-sync replicas and
    ``min.insync.replicas`` of each named topic that exists."""
    async with _admin(kafka, "describe topics") as admin:
        cluster = await admin.describe_cluster()
        found = [t for t in await admin.describe_topics(names) if t["error_code"] != _UNKNOWN_TOPIC]
        in_sync = await _min_insync(admin, [t["topic"] for t in found])
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
    return ClusterState(tuple(sorted(b["node_id"] for b in cluster["brokers"])), topics)


async def _min_insync(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    # A broker that has not yet caught up with a new topic's metadata answers "unknown
    # topic" for it; asked again (up to ~2 s), it knows.
    for _ in range(20):
        if not (missing := [name for name in names if name not in found]):
            break
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in missing]
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                for entry in resource["config_entries"]:
                    name = entry.get("config_names") or entry.get("config_name")
                    if name == "min.insync.replicas" and entry["config_value"]:
                        found[resource["resource_name"]] = int(entry["config_value"])
        await asyncio.sleep(0.1 if len(found) < len(names) else 0)
    return found


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: set[str]) -> None:
    # Creation is asynchronous on the broker; wait (up to ~10 s) until all are listed.
    for _ in range(100):
        if names <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
    raise BrokerUnavailableError(f"topics {sorted(names)} not visible after creation")
