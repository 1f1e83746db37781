"""Consumers: a consumer-group member with manual commits, and a single-partition reader."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTP
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from llmbus.bus.endpoint import Kafka, client_kwargs
from llmbus.bus.record import Record, TopicPartition
from llmbus.bus.sticky_assignor import TopicBalancedStickyAssignor
from llmbus.errors import BrokerUnavailableError, NotStartedError

RebalanceHandler = Callable[[set[TopicPartition]], Awaitable[None]]

GROUP_FETCH_WAIT_MS = 500
"""How long the broker holds a group member's fetch that finds nothing new. Kafka's
default, kept short on purpose: a partition whose buffered records are all taken while a
fetch of the others is in flight (what a held lane's buffer comes to, see
consumers/lanes.py) is fetched again only once that fetch returns, which for idle
partitions is after this wait."""

READER_FETCH_WAIT_MS = 5000
"""How long the broker holds a group-less reader's fetch that finds nothing new: it
answers as soon as a record lands, so this adds no latency, while each wait that runs out
costs a fetch round trip in the broker and here (CPU the engine wants). Ten times Kafka's
default: a reader's one partition is always fetched, so nothing waits for a fetch in
flight (see ``GROUP_FETCH_WAIT_MS``). An idle stack's broker took 1.46 CPU-s per 30 s with
500 ms, 1.20 with this (2026-11-29, one measurement each)."""

BUSY_LIMIT_MS = 3_600_000
"""aiokafka's ``max_poll_interval_ms``: a member that has not fetched for this long leaves
its group. A worker fetches only for free slots, and on a CPU engine every slot may stay
busy for many minutes (64 sequences share about 150 tok/s on 2 cores: a 2,048-token answer
takes about a quarter of an hour). aiokafka's 5 minutes would make a worker that is merely full
leave the group, and the group hand its running requests to another worker to compute
again. Liveness is the heartbeat's job (``session_timeout_ms``): it runs on the worker's
event loop, so a stuck loop still loses its partitions within seconds, and a fetch loop
that fails stops the worker."""


def _to_record(msg: Any) -> Record:
    return Record(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        key=msg.key,
        value=msg.value,
        headers=list(msg.headers or ()),
        timestamp_ms=msg.timestamp,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_assigned: RebalanceHandler, on_revoked: RebalanceHandler) -> None:
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Iterable[KafkaTP]) -> None:
        await self._on_revoked({TopicPartition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Iterable[KafkaTP]) -> None:
        await self._on_assigned({TopicPartition(tp.topic, tp.partition) for tp in assigned})


async def _noop(_: set[TopicPartition]) -> None:
    return None


class _ConsumerBase:
    def __init__(self) -> None:
        self._consumer: AIOKafkaConsumer | None = None

    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise NotStartedError(f"{type(self).__name__} used before start()")
        return self._consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def getmany(
        self,
        *,
        timeout_ms: int,
        max_records: int | None = None,
        partitions: Iterable[TopicPartition] = (),
    ) -> list[Record]:
        """Records fetched so far (waiting up to ``timeout_ms`` for some), from
        ``partitions`` only when given (the others' stay buffered), else from all."""
        ktps = [KafkaTP(t, p) for t, p in partitions]
        try:
            batches = await self._started().getmany(
                *ktps, timeout_ms=timeout_ms, max_records=max_records
            )
        except KafkaError as exc:
            raise BrokerUnavailableError(f"fetch failed: {exc}") from exc
        return [_to_record(m) for msgs in batches.values() for m in msgs]


class GroupConsumer(_ConsumerBase):
    """A consumer-group member that never commits on its own.

    Auto-commit is off: callers commit explicit offsets with ``commit`` once the work for
    the records below them is done (see each caller's docstring for its commit order).
    """

    def __init__(
        self,
        bootstrap: Kafka,
        *,
        group_id: str,
        topics: list[str] | None = None,
        pattern: str | None = None,
        client_id: str,
        max_partition_fetch_bytes: int,
        on_assigned: RebalanceHandler = _noop,
        on_revoked: RebalanceHandler = _noop,
        sticky: bool = False,
    ) -> None:
        super().__init__()
        self._sticky = sticky
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = topics or []
        self._pattern = pattern
        self._client_id = client_id
        self._max_fetch = max_partition_fetch_bytes
        self._listener = _Listener(on_assigned, on_revoked)

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._bootstrap),
            group_id=self._group_id,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self._max_fetch,
            max_poll_interval_ms=BUSY_LIMIT_MS,
            # A dead worker's partitions move to a live one within ~10 s.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            # A pattern subscriber finds new matching topics (a pipeline's results topic)
            # at its next metadata refresh; 30 s instead of aiokafka's 5 minutes. Nothing is
            # lost meanwhile: a new topic is read from its beginning.
            metadata_max_age_ms=30_000,
            fetch_max_wait_ms=GROUP_FETCH_WAIT_MS,
            # Sticky: a rebalance moves as few partitions as it can, lane by lane.
            # Round-robin stays listed so a group whose older members offer only it still
            # agrees on one during a rolling upgrade.
            partition_assignment_strategy=(
                (TopicBalancedStickyAssignor(), RoundRobinPartitionAssignor)
                if self._sticky
                else (RoundRobinPartitionAssignor,)
            ),
        )
        try:
            await consumer.start()
            # Set before subscribing: rebalance listeners may call back into this object.
            self._consumer = consumer
            if self._pattern:
                consumer.subscribe(pattern=self._pattern, listener=self._listener)
            else:
                consumer.subscribe(self._topics, listener=self._listener)
        except KafkaError as exc:
            self._consumer = None
            await consumer.stop()
            raise BrokerUnavailableError(f"cannot join group {self._group_id}") from exc

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset for ``tp`` (None if it never committed)."""
        try:
            offset: int | None = await self._started().committed(KafkaTP(*tp))
        except KafkaError as exc:
            raise BrokerUnavailableError(f"cannot read committed offset of {tp}") from exc
        return offset

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(tp.topic, tp.partition) for tp in self._started().assignment()}

    async def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: records between our position and the partition's end
        (as of the last fetch; no request to the broker)."""
        consumer = self._started()
        out: dict[TopicPartition, int] = {}
        for ktp in consumer.assignment():
            end = consumer.highwater(ktp)
            if end is None:
                continue
            try:
                # A partition whose position is still being reset would block; it has no
                # meaningful lag yet, so 1 s is enough to tell.
                position = await asyncio.wait_for(consumer.position(ktp), timeout=1.0)
            except (KafkaError, TimeoutError):
                continue
            out[TopicPartition(ktp.topic, ktp.partition)] = max(0, end - position)
        return out

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to read, per partition)."""
        if not offsets:
            return
        payload = {KafkaTP(t, p): OffsetAndMetadata(o, "") for (t, p), o in offsets.items()}
        try:
            await self._started().commit(payload)
        except CommitFailedError as exc:
            # The group rebalanced away from us; the new owner will redo the records.
            raise BrokerUnavailableError(f"commit rejected after rebalance: {exc}") from exc
        except KafkaError as exc:
            raise BrokerUnavailableError(f"commit failed: {exc}") from exc


async def _offset_of(
    consumer: AIOKafkaConsumer, ktp: KafkaTP, where: Literal["beginning", "end"]
) -> int:
    """The partition's first or end offset, looked up explicitly (no assignment needed)."""
    lookup = consumer.beginning_offsets if where == "beginning" else consumer.end_offsets
    offsets: dict[KafkaTP, int] = await lookup([ktp])
    return offsets[ktp]


def _assign_paused(consumer: AIOKafkaConsumer, ktp: KafkaTP) -> None:
    """Assign ``ktp`` without fetching it yet: its offset is looked up next, then
    ``_start_at``. Assigned first so the lookup finds the topic's metadata (a consumer
    knows no topic before; an unknown topic's lookup waits out a 100 ms retry backoff).
    Paused because an assigned partition with no position gets one from the reset policy
    (the end) in the background and a fetch from there at once; the broker holds a fetch
    that finds nothing for ``fetch_max_wait_ms``, and the fetch from the sought offset
    waited for it: every answered-log load took ~510 ms, and a worker's first requests on
    a partition waited with it (2026-12-07)."""
    consumer.assign([ktp])
    consumer.pause(ktp)


def _start_at(consumer: AIOKafkaConsumer, ktp: KafkaTP, offset: int) -> None:
    """Fetch ``ktp`` from ``offset`` on. An explicit ``seek``, never
    ``seek_to_beginning``/``seek_to_end``: a reset lookup landing after theirs would win
    (aiokafka applies whichever answer arrives to a partition still awaiting one), while
    a seek leaves no reset pending, so a late answer is dropped."""
    consumer.seek(ktp, offset)
    consumer.resume(ktp)


class PartitionReader(_ConsumerBase):
    """Reads one partition from its current end, with no consumer group.

    A client names this partition in its requests' ``reply_to``; thousands of clients
    share one replies topic this way without a topic or a group each.
    """

    def __init__(
        self,
        bootstrap: Kafka,
        *,
        topic: str,
        partition: int,
        client_id: str,
        from_beginning: bool = False,
        start_offset: int | None = None,
    ) -> None:
        super().__init__()
        self._from_beginning = from_beginning
        self._start_offset = start_offset
        self._bootstrap = bootstrap
        self._tp = KafkaTP(topic, partition)
        self._client_id = client_id

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._bootstrap),
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=READER_FETCH_WAIT_MS,
        )
        try:
            await consumer.start()
            _assign_paused(consumer, self._tp)
            offset = self._start_offset
            if offset is None:
                # Resolved now, not lazily: replies to requests sent after start() are
                # never skipped by a seek that lands after they arrived.
                where: Literal["beginning", "end"] = "beginning" if self._from_beginning else "end"
                offset = await _offset_of(consumer, self._tp, where)
            _start_at(consumer, self._tp, offset)
        except KafkaError as exc:
            await consumer.stop()
            raise BrokerUnavailableError(f"cannot read {self._tp}") from exc
        self._consumer = consumer

    async def __aenter__(self) -> Self:
        await self.start()
        return self


async def read_since(
    bootstrap: Kafka, tp: TopicPartition, since_ms: int, *, client_id: str
) -> list[Record]:
    """Every record of ``tp`` written at or after ``since_ms`` up to the current end."""
    records, _ = await _read_to_end(bootstrap, tp, since_ms, client_id=client_id)
    return records


async def read_all(
    bootstrap: Kafka, tp: TopicPartition, *, client_id: str
) -> tuple[list[Record], int]:
    """Every record of ``tp`` up to its current end, and that end offset (where a
    ``PartitionReader`` continues without a gap)."""
    return await _read_to_end(bootstrap, tp, None, client_id=client_id)


async def _read_to_end(
    bootstrap: Kafka, tp: TopicPartition, since_ms: int | None, *, client_id: str
) -> tuple[list[Record], int]:
    ktp = KafkaTP(*tp)
    consumer = AIOKafkaConsumer(
        **client_kwargs(bootstrap),
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        # Never waited out: every fetch here starts below the end looked up first, so the
        # broker answers it at once. The readers' long wait, so that a fetch from anywhere
        # else (see _assign_paused) would stall a read for seconds, which
        # tests/bus/test_readers.py catches, rather than for an unnoticed 0.5 s.
        fetch_max_wait_ms=READER_FETCH_WAIT_MS,
    )
    out: list[Record] = []
    end = 0
    try:
        await consumer.start()
        _assign_paused(consumer, ktp)
        end = await _offset_of(consumer, ktp, "end")
        if since_ms is None:
            first = await _offset_of(consumer, ktp, "beginning")
        else:
            found = (await consumer.offsets_for_times({ktp: since_ms}))[ktp]
            if found is None:
                return out, end  # nothing written since then
            first = found.offset
        if first >= end:
            return out, end
        _start_at(consumer, ktp, first)
        while await consumer.position(ktp) < end:
            # 1 s per fetch round: the data is there already; this only bounds a stall.
            batches = await consumer.getmany(ktp, timeout_ms=1000)
            out += [_to_record(m) for m in batches.get(ktp, [])]
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot read {tp}: {exc}") from exc
    finally:
        await consumer.stop()
    return [r for r in out if r.offset < end], end
