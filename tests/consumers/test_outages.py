"""Outages of the real broker and database mid-run: nothing lost, no duplicate rows."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from llmbus.schemas import ChatResult
from tests.conftest import Bus

pytestmark = pytest.mark.integration

N = 100


async def audit_counts(bus: Bus, ids: list[str], want: int, timeout_s: float) -> dict[str, int]:
    db = create_async_engine(bus.stack.postgres.url("llmbus_reader"))
    try:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout_s
        while True:
            async with db.connect() as conn:
                res = await conn.execute(
                    text(
                        "SELECT request_id, count(*) FROM results WHERE request_id = ANY(:ids) "
                        "GROUP BY request_id"
                    ),
                    {"ids": ids},
                )
                counts = {r[0]: r[1] for r in res}
            if len(counts) >= want or loop.time() > give_up:
                return counts
            await asyncio.sleep(0.5)
    finally:
        await db.dispose()


def figure(name: str, sent: int, answered: list[object], counts: dict[str, int]) -> tuple[int, int]:
    results = [r for r in answered if isinstance(r, ChatResult)]
    lost = sent - len({r.request_id for r in results})
    dupes = (len(results) - len({r.request_id for r in results})) + sum(
        c - 1 for c in counts.values()
    )
    print(
        f"\n[{name}] sent={sent} answered={len(results)} lost={lost} duplicates={dupes} "
        f"audit_rows={len(counts)}"
    )
    return lost, dupes


async def test_postgres_down_20s_auditor_retries_and_catches_up(isolated_bus: Bus) -> None:
    bus = isolated_bus
    bus.spawn_worker_process("pg-outage", step_s=0.02)
    await bus.start_auditor()
    ids = [f"pg{i}" for i in range(N)]
    async with bus.client() as client:
        await client.chat("probe")
        await asyncio.to_thread(bus.stack.postgres.stop)
        answered = await asyncio.gather(
            *(client.chat("a b c", request_id=r) for r in ids), return_exceptions=True
        )
        await asyncio.sleep(20)  # the database stays down 20 s in all
        await asyncio.to_thread(bus.stack.postgres.start)
    counts = await audit_counts(bus, ids, N, timeout_s=60)
    lost, dupes = figure("postgres down 20 s", N, answered, counts)
    assert lost == 0 and dupes == 0
    assert len(counts) == N


async def test_broker_restart_15s_everyone_reconnects(isolated_bus: Bus) -> None:
    bus = isolated_bus
    bus.spawn_worker_process("kafka-outage", step_s=0.05)
    await bus.start_auditor()
    ids = [f"kb{i}" for i in range(N)]
    async with bus.client() as client:
        await client.chat("probe")
        tasks = [
            asyncio.ensure_future(client.chat("a b c d e f g h i j", request_id=r)) for r in ids
        ]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(bus.stack.kafka.stop)
        await asyncio.sleep(15)
        await asyncio.to_thread(bus.stack.kafka.start)
        answered = await asyncio.gather(*tasks, return_exceptions=True)
    counts = await audit_counts(bus, ids, N, timeout_s=90)
    lost, dupes = figure("broker down 15 s", N, answered, counts)
    errors = [repr(a) for a in answered if not isinstance(a, ChatResult)][:3]
    assert lost == 0, errors
    assert dupes == 0
    assert len(counts) == N
