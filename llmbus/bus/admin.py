"""Topic creation, idempotent: existing topics are left as they are."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from llmbus.bus.endpoint import Kafka, client_kwargs, describe
from llmbus.errors import BrokerUnavailableError


async def ensure_topics(
    bootstrap: Kafka, topics: dict[str, int], *, retention_ms: int | None = None
) -> None:
    """Create each ``topic -> partitions`` that does not exist yet."""
    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap), client_id="llmbus-admin")
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        configs = {"retention.ms": str(retention_ms)} if retention_ms else {}
        missing = [
            NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=configs)
            for name, n in topics.items()
            if name not in existing
        ]
        if missing:
            # Another process may create one between list and create: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        await _wait_for_metadata(admin, set(topics))
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"cannot create topics on {describe(bootstrap)}: {exc}"
        ) from exc
    finally:
        await admin.close()


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: set[str]) -> None:
    # Creation is asynchronous on the broker; wait (up to ~10 s) until all are listed.
    for _ in range(100):
        if names <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
    raise BrokerUnavailableError(f"topics {sorted(names)} not visible after creation")
