"""A worker joining the group mid-run: partitions move, unfinished work is handed back,
finished work is committed first, and nothing is lost or computed twice (real Kafka)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from llmbus.schemas import ChatResult
from tests.conftest import Bus
from tests.consumers.test_delivery import LONG, collect_finals

pytestmark = pytest.mark.integration


async def test_a_worker_joining_mid_run_takes_partitions_without_loss_or_recompute(
    bus: Bus,
) -> None:
    first = bus.spawn_worker_process("first", step_s=0.05, max_num_seqs=16)
    n = 160
    ids = {f"j{i}" for i in range(n)}
    wire: dict[str, list[bytes]] = {}
    stop = asyncio.Event()
    async with bus.client(timeout_s=180) as client:
        await client.chat("probe")  # the first worker is up and owns every partition
        counter = asyncio.ensure_future(
            collect_finals(bus, client.reply_to.partition, ids, stop, wire)
        )
        await asyncio.sleep(1)  # the counter reads from the end before anything is sent
        tasks = [asyncio.ensure_future(client.chat(LONG, request_id=rid)) for rid in ids]
        # ~20 s of work for one worker; the second joins once a quarter is done.
        while sum(t.done() for t in tasks) < n // 4:  # noqa: ASYNC110 - polls other tasks
            await asyncio.sleep(0.05)
        bus.spawn_worker_process("second", step_s=0.05, max_num_seqs=16)
        results = await asyncio.gather(*tasks)
        await asyncio.sleep(2)
        stop.set()
        await counter
    assert first.poll() is None, "the first worker is still serving"
    by_worker = Counter(r.worker_id for r in results if isinstance(r, ChatResult))
    answered = {r.request_id for r in results}
    lost = n - len(answered)
    duplicates = len(results) - len(answered)
    on_wire = sum(len(finals) for finals in wire.values())
    recomputed = sum(1 for finals in wire.values() if len(set(finals)) > 1)
    print(
        f"\n[join] sent={n} answered={len(answered)} lost={lost} duplicates={duplicates} "
        f"finals_on_wire={on_wire} recomputed={recomputed} by_worker={dict(by_worker)}"
    )
    assert lost == 0
    assert duplicates == 0
    assert recomputed == 0, "work finished before the rebalance is not redone"
    assert set(by_worker) == {"first", "second"}, "the joiner took partitions over"
