"""``GatewayService``: the long-lived parts one gateway process holds, started together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from prometheus_client import CollectorRegistry

from llmbus.bus import BusProducer, ensure_topics
from llmbus.bus.topic_check import TopicWatch
from llmbus.errors import NotStartedError, SetupError
from llmbus.gateway.auth import Authenticator, JwtConfig
from llmbus.gateway.rate_limits import RateLimiter
from llmbus.jobs.batch_jobs import BatchJobs
from llmbus.metrics import GatewayMetrics, TopicMetrics
from llmbus.producers import LlmbusClient
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.settings import Settings
from llmbus.store.api_keys import KeyStore
from llmbus.store.batch_store import BatchStore
from llmbus.store.call_log import CallLog
from llmbus.store.database import Database
from llmbus.store.file_store import FileStore
from llmbus.store.rate_usage import RateUsage


@dataclass
class Parts:
    client: LlmbusClient
    producer: BusProducer
    auth: Authenticator
    limiter: RateLimiter
    batches: BatchJobs
    batch_store: BatchStore
    files: FileStore


class GatewayService:
    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        if settings.database_url is None:
            raise SetupError("the gateway needs LLMBUS_DATABASE_URL (keys, audit)")
        self.settings = settings
        self.metrics = GatewayMetrics(registry)
        self.db = Database(settings.database_url.get_secret_value(), pool_size=5)
        self.calls = CallLog(self.db)
        self._parts: Parts | None = None
        self._topics: TopicWatch | None = None

    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise NotStartedError("GatewayService used before start()")
        return self._parts

    async def start(self) -> None:
        s = self.settings
        await ensure_topics(s.kafka, s.topics(), layout=s.topic_layout)
        self._topics = TopicWatch(
            s.kafka, s.topics(), s.topic_layout, TopicMetrics(self.metrics.registry)
        )
        await self._topics.start()
        await self.db.start()
        await self.calls.start()
        client = LlmbusClient.from_settings(s)
        await client.start()
        producer = BusProducer(
            s.kafka,
            client_id="llmbus-gateway-batch",
            max_request_bytes=s.max_request_bytes,
        )
        await producer.start()
        batch_store = BatchStore(self.db)
        publisher = BatchPublisher.from_settings(producer, s)
        jwt_config = None
        if s.jwt_issuer and s.jwt_audience and (s.jwt_jwks_file or s.jwt_jwks_url):
            jwt_config = JwtConfig(
                s.jwt_issuer, s.jwt_audience, s.jwt_jwks_file, s.jwt_jwks_url,
                s.jwt_tenant_claim, s.jwt_user_claim,
            )  # fmt: skip
        self._parts = Parts(
            client=client,
            producer=producer,
            auth=Authenticator(
                KeyStore(self.db), cache_s=s.gateway_key_cache_s, jwt_config=jwt_config
            ),
            limiter=RateLimiter(
                default_rpm=s.gateway_default_rpm,
                default_tpm=s.gateway_default_tpm,
                shared=RateUsage(self.db) if s.gateway_shared_rate_limits else None,
            ),
            batches=BatchJobs(batch_store, publisher),
            batch_store=batch_store,
            files=FileStore(self.db),
        )

    async def stop(self) -> None:
        if self._parts is not None:
            parts, self._parts = self._parts, None
            await parts.client.stop()
            await parts.producer.stop()
        if self._topics is not None:
            await self._topics.stop()
        await self.calls.stop()
        await self.db.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
