"""EngineGate: suspects run alone, and an engine death names who was in it."""

from __future__ import annotations

import asyncio

import pytest

from llmbus.bus import Record
from llmbus.consumers.engine_gate import EngineGate
from llmbus.errors import EngineDeadError


def record(offset: int) -> Record:
    return Record("t", 0, offset, None, b"{}", [], 0)


async def test_alone_waits_for_the_engine_to_empty_and_keeps_others_out() -> None:
    gate = EngineGate()
    never = asyncio.Event()
    order: list[str] = []
    release_a = asyncio.Event()

    async def run(rid: str, *, alone: bool, hold: asyncio.Event | None = None) -> None:
        async with gate.enter(rid, record(0), alone=alone, stop=never):
            order.append(f"{rid} in ({gate.occupancy})")
            if hold is not None:
                await hold.wait()
            await asyncio.sleep(0.01)
        order.append(f"{rid} out")

    a = asyncio.create_task(run("a", alone=False, hold=release_a))
    await asyncio.sleep(0.01)
    suspect = asyncio.create_task(run("suspect", alone=True))
    await asyncio.sleep(0.01)
    b = asyncio.create_task(run("b", alone=False))  # arrives after the suspect: waits
    await asyncio.sleep(0.05)
    assert order == ["a in (1)"], "the suspect waits for a; b waits behind the suspect"
    release_a.set()
    await asyncio.gather(a, suspect, b)
    assert order == ["a in (1)", "a out", "suspect in (1)", "suspect out", "b in (1)", "b out"]


async def test_a_stop_while_waiting_returns_without_entering() -> None:
    gate = EngineGate()
    never, stop = asyncio.Event(), asyncio.Event()
    hold = asyncio.Event()

    async def occupy() -> None:
        async with gate.enter("a", record(0), alone=False, stop=never):
            await hold.wait()

    a = asyncio.create_task(occupy())
    await asyncio.sleep(0.01)

    async def suspect() -> int:
        async with gate.enter("s", record(1), alone=True, stop=stop):
            return gate.occupancy

    waiting = asyncio.create_task(suspect())
    await asyncio.sleep(0.01)
    stop.set()
    assert await waiting == 1, "only a is inside: the stopped suspect never entered"
    hold.set()
    await a
    assert gate.occupancy == 0


async def test_engine_death_snapshots_everyone_inside_once() -> None:
    gate = EngineGate()
    never = asyncio.Event()
    dead = asyncio.Event()

    async def generate(rid: str, offset: int) -> None:
        async with gate.enter(rid, record(offset), alone=False, stop=never):
            await dead.wait()
            raise EngineDeadError("gone")

    tasks = [asyncio.create_task(generate(f"r{i}", i)) for i in range(3)]
    await asyncio.sleep(0.01)
    dead.set()
    for task in tasks:
        with pytest.raises(EngineDeadError):
            await task
    assert gate.died_with is not None
    assert {rid: r.offset for rid, r in gate.died_with.items()} == {"r0": 0, "r1": 1, "r2": 2}
    assert gate.occupancy == 0
