"""Kafka with SASL/SCRAM: every kind of Kafka client in llmbus (admin, producer, group
consumer, partition readers) authenticates with the configured credentials, against a
real broker whose listener requires SCRAM-SHA-512."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from llmbus.bus import ensure_topics
from llmbus.consumers.worker import Worker, WorkerConfig
from llmbus.errors import BrokerUnavailableError
from llmbus.metrics import WorkerMetrics
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings, default_cache_dir
from llmbus.stack.kafka_node import KafkaNode
from llmbus.stack.processes import free_port
from tests.fakes.echo_engine import EchoEngine

pytestmark = pytest.mark.integration


@pytest.fixture
async def scram_broker(tmp_path: Path) -> AsyncIterator[tuple[KafkaNode, str]]:
    password = secrets.token_urlsafe(16)
    node = KafkaNode(
        state_dir=tmp_path,
        cache_dir=default_cache_dir(),
        port=free_port(),
        controller_port=free_port(),
        scram_port=free_port(),
        scram_users=(("llmbus", password),),
    )
    await asyncio.to_thread(node.start)
    try:
        yield node, password
    finally:
        await asyncio.to_thread(node.stop)


async def test_every_client_authenticates_with_scram(
    scram_broker: tuple[KafkaNode, str], tmp_path: Path
) -> None:
    node, password = scram_broker
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{node.scram_port}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="llmbus",
        kafka_sasl_password=SecretStr(password),
        topic_prefix="sasl",
        request_partitions=2,
        reply_partitions=2,
        state_dir=tmp_path,
    )
    assert password not in repr(settings) and password not in repr(settings.kafka)
    await ensure_topics(settings.kafka, settings.topics())  # the admin client
    worker = Worker(
        WorkerConfig.from_settings(settings, "sasl-worker"),
        EchoEngine(step_s=0.01),
        WorkerMetrics(CollectorRegistry()),
    )
    task = asyncio.create_task(worker.run())  # group consumer, producer, answered log, control
    try:
        async with LlmbusClient.from_settings(settings, timeout_s=60) as client:
            result = await client.chat("over sasl")
        assert result.completion.choices[0].message.content.startswith("echo:")
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=60)

    wrong = settings.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    with pytest.raises(BrokerUnavailableError):
        await ensure_topics(wrong.kafka, {"sasl.x": 1})
    with pytest.raises(BrokerUnavailableError):  # no credentials at all on the SASL port
        await ensure_topics(settings.kafka_bootstrap, {"sasl.x": 1})
