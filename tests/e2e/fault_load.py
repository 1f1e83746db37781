"""Load with a fault injected mid-way, and the count of what came back: for the broker
fault tests on the three-node cluster (``test_cluster_faults.py``)."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from llmbus.bus import PartitionReader
from llmbus.bus.admin import describe_topics
from llmbus.schemas import ChatResult
from llmbus.schemas.wire import H_KIND, H_REQUEST_ID, header
from llmbus.stack.kafka_cluster import KafkaCluster
from tests.conftest import Bus

Fault = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class LoadOutcome:
    name: str
    sent: int
    answered: int
    lost: list[str]
    duplicates: int
    """Finals on the replies topic beyond one per request (resent or recomputed)."""
    audit_rows: int
    """Requests with exactly one request row and one result row in PostgreSQL."""
    errors: list[str]

    def line(self) -> str:
        return (
            f"[{self.name}] sent {self.sent} / answered {self.answered} / lost "
            f"{len(self.lost)} / duplicates {self.duplicates} / audit rows {self.audit_rows}"
        )

    def assert_nothing_lost(self) -> None:
        assert not self.errors, self.errors[:5]
        assert not self.lost, f"lost {len(self.lost)}: {self.lost[:10]}"
        assert self.answered == self.sent
        assert self.duplicates == 0
        assert self.audit_rows == self.sent, "one request row and one result row per request"


async def collect_finals(
    bus: Bus, partition: int, ids: set[str], stop: asyncio.Event, finals: dict[str, list[bytes]]
) -> None:
    """Every final on the wire per request id: a resent final is byte-identical to the
    first, a recomputed one is not (other worker id and timestamps)."""
    async with PartitionReader(
        bus.settings.kafka,
        topic=bus.settings.replies_topic,
        partition=partition,
        client_id="counter",
    ) as reader:
        while not stop.is_set():
            for record in await reader.getmany(timeout_ms=200):
                rid = header(record.headers, H_REQUEST_ID)
                if rid in ids and header(record.headers, H_KIND) in ("result", "error"):
                    finals.setdefault(rid, []).append(record.value or b"")


async def run_under_fault(
    bus: Bus,
    fault: Fault,
    *,
    name: str,
    requests: int = 500,
    rate_per_s: float = 25.0,
    prompt: str = "a b c d e f",
    **chat: object,
) -> LoadOutcome:
    """Send ``requests`` chats at ``rate_per_s`` while ``fault`` runs (and go on sending
    until it is over, so a long fault is under load throughout), then count."""
    tag = uuid.uuid4().hex[:6]
    ids: set[str] = set()
    wire: dict[str, list[bytes]] = {}
    stop = asyncio.Event()
    errors: list[str] = []
    # Generous waits: a publish may wait out a leader election (seconds), and nothing may
    # be given up on while brokers come and go; the test is about loss, not speed.
    async with bus.client(timeout_s=300, publish_timeout_s=120) as client:
        counter = asyncio.ensure_future(
            collect_finals(bus, client.reply_to.partition, ids, stop, wire)
        )
        await asyncio.sleep(1)  # the counter reads from the end before anything is sent

        async def one(rid: str) -> ChatResult | None:
            try:
                return await client.chat(prompt, request_id=rid, **chat)
            except Exception as exc:  # every failure is counted and shown
                errors.append(f"{rid}: {type(exc).__name__}: {exc}")
                return None

        faulting = asyncio.ensure_future(fault())
        tasks = []
        started = time.monotonic()
        while len(tasks) < requests or not faulting.done():
            rid = f"{tag}-{len(tasks)}"
            ids.add(rid)
            tasks.append(asyncio.ensure_future(one(rid)))
            await asyncio.sleep(max(0.0, started + len(tasks) / rate_per_s - time.monotonic()))
        await faulting
        results = await asyncio.gather(*tasks)
        await asyncio.sleep(2)  # a late second final, if any, reaches the counter
        stop.set()
        await counter
    answered = {r.request_id for r in results if r is not None}
    audit = await audited(bus, ids)
    return LoadOutcome(
        name=name,
        sent=len(ids),
        answered=len(answered),
        lost=sorted(ids - answered),
        duplicates=sum(len(finals) - 1 for finals in wire.values()),
        audit_rows=audit,
        errors=errors,
    )


async def audited(bus: Bus, ids: set[str]) -> int:
    """Requests with one request row and one result row, once the auditor has caught up
    (waits up to a minute for it)."""
    db = create_async_engine(bus.stack.postgres.url("llmbus_reader"))
    query = text(
        "SELECT (SELECT count(*) FROM requests WHERE request_id = r.id), "
        "(SELECT count(*) FROM results WHERE request_id = r.id) "
        "FROM unnest(CAST(:ids AS text[])) AS r(id)"
    )
    try:
        for _ in range(300):
            async with db.connect() as conn:
                rows = (await conn.execute(query, {"ids": sorted(ids)})).all()
            good = sum(1 for req, res in rows if (req, res) == (1, 1))
            if good == len(ids) or any(req > 1 or res > 1 for req, res in rows):
                return good
            await asyncio.sleep(0.2)
        return good
    finally:
        await db.dispose()


async def busiest_leader(bus: Bus, topic: str) -> int:
    """The node leading most partitions of ``topic``."""
    state = await describe_topics(bus.settings.kafka, [topic])
    leaders = collections.Counter(p.leader for p in state.topics[topic].partitions)
    return leaders.most_common(1)[0][0]


async def wait_in_sync(bus: Bus, cluster: KafkaCluster, *, timeout_s: float = 180) -> None:
    """Until every node runs and no partition of the bus's topics (or of the group
    offsets) lacks an in-sync replica: the next fault starts from a whole cluster."""
    await asyncio.to_thread(cluster.start)
    names = [*bus.settings.topics(), "__consumer_offsets"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = await describe_topics(bus.settings.kafka, names)
        parts = [p for t in state.topics.values() for p in t.partitions]
        # Every bus topic must be described: with none found, "no partition lacks a
        # replica" would hold trivially.
        if (
            len(state.brokers) == len(cluster.nodes)
            and set(bus.settings.topics()) <= set(state.topics)
            and all(not (p.under_replicated or p.offline) for p in parts)
        ):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"cluster not back in sync after {timeout_s:.0f} s")
