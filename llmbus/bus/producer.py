"""A started-once Kafka producer with idempotence on and errors mapped to ours."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from llmbus.bus.endpoint import Kafka, client_kwargs, describe
from llmbus.bus.record import Outgoing
from llmbus.errors import BrokerUnavailableError, NotStartedError

Headers = list[tuple[str, bytes]]


class BusProducer:
    """Publishes records; ``send`` resolves only once the broker has acknowledged them."""

    def __init__(self, bootstrap: Kafka, *, client_id: str, max_request_bytes: int) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._max_request_bytes = max_request_bytes
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **client_kwargs(self._bootstrap),
            client_id=self._client_id,
            # acks=all + idempotence: an acknowledged final is on every in-sync replica and
            # a retried send after a broker blip is not written twice.
            acks="all",
            enable_idempotence=True,
            # No linger: every hop of a request (ask, answered log, final) would wait it out,
            # which made up most of llmbus's added latency at low load. Under load records
            # still share requests: they accumulate while the previous one is in flight.
            linger_ms=0,
            max_request_size=self._max_request_bytes + 64 * 1024,
            # Per-partition buffer. aiokafka's 16 KiB default holds two embedding answers:
            # every third one then waits for a round trip to the broker (a batch job's
            # finals all go to one reply partition).
            max_batch_size=self._max_request_bytes + 64 * 1024,
            # A broker restart takes seconds; keep retrying a send rather than failing it.
            request_timeout_ms=30_000,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BrokerUnavailableError(
                f"cannot reach Kafka at {describe(self._bootstrap)}"
            ) from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise NotStartedError("BusProducer used before start()")
        return self._producer

    async def enqueue(
        self,
        topic: str,
        value: bytes,
        headers: Headers,
        *,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[object]:
        """Queue a record; the returned future resolves when the broker acknowledges it.

        Lets a caller queue many records (deltas) and wait only for the last one.
        """
        try:
            fut: asyncio.Future[object] = await self._started().send(
                topic, value=value, key=key, headers=headers, partition=partition
            )
        except KafkaError as exc:
            raise BrokerUnavailableError(f"send to {topic} failed: {exc}") from exc
        return fut

    async def send(
        self,
        topic: str,
        value: bytes,
        headers: Headers,
        *,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> None:
        """Publish and wait for the broker's acknowledgement."""
        record = Outgoing(topic, value, headers, key=key, partition=partition)
        (failure,) = await self.send_together([record])
        if failure is not None:
            raise failure

    async def send_together(
        self, records: Sequence[Outgoing]
    ) -> list[BrokerUnavailableError | None]:
        """Publish ``records`` and wait for every acknowledgement; one error (or None) per
        record, so a caller retries only what failed. A record that cannot be queued (too
        large, no metadata) fails with every record after it, unsent.

        All are queued before the producer's sender runs (queueing yields only to fetch a
        topic's metadata the first time, or when a partition's buffer is full), so records
        whose partitions share a leader usually leave in one produce request: one round
        trip instead of one per record. The broker still writes each partition on its own:
        one may fail (and be retried alone) while the others land.
        """
        acks: list[asyncio.Future[object] | BrokerUnavailableError] = []
        for r in records:
            try:
                ack = await self.enqueue(
                    r.topic, r.value, r.headers, key=r.key, partition=r.partition
                )
            except BrokerUnavailableError as exc:
                # The records after it stay unsent: callers list them in the order they
                # may land (an answered-log entry before its final).
                unsent = BrokerUnavailableError(f"not sent: an earlier record failed ({exc})")
                acks += [exc] + [unsent] * (len(records) - len(acks) - 1)
                break
            acks.append(ack)
        waiting = [ack for ack in acks if isinstance(ack, asyncio.Future)]
        if waiting:
            await asyncio.wait(waiting)
        return [_failure(r.topic, ack) for r, ack in zip(records, acks, strict=True)]

    async def ping(self) -> bool:
        """Whether a broker answers a metadata request now (not from the cache)."""
        try:
            return bool(await self._started().client.fetch_all_metadata())
        except KafkaError:
            return False

    async def existing_topics(self) -> set[str]:
        """Every topic the cluster has now (a fresh metadata request, not the cache)."""
        try:
            cluster = await self._started().client.fetch_all_metadata()
        except KafkaError as exc:
            raise BrokerUnavailableError(f"no metadata from {describe(self._bootstrap)}") from exc
        return set(cluster.topics())

    async def partitions_for(self, topic: str) -> set[int]:
        try:
            parts = await self._started().partitions_for(topic)
        except KafkaError as exc:
            raise BrokerUnavailableError(f"no metadata for {topic}") from exc
        return set(parts or ())


def _failure(
    topic: str, ack: asyncio.Future[object] | BrokerUnavailableError
) -> BrokerUnavailableError | None:
    if isinstance(ack, BrokerUnavailableError):
        return ack
    exc = ack.exception()
    if exc is None:
        return None
    if not isinstance(exc, KafkaError):
        raise exc
    mapped = BrokerUnavailableError(f"send to {topic} failed: {exc}")
    mapped.__cause__ = exc
    return mapped
