"""Delivery guarantees on real Kafka and PostgreSQL, with the deterministic stand-in
engine (tests/fakes/echo_engine.py) so faults are fast and repeatable."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.bus import BusProducer
from llmbus.consumers.engine import Engine
from llmbus.errors import RemoteError
from llmbus.schemas import ChatResult, StreamDelta, encode
from tests.conftest import Bus
from tests.e2e.fault_load import collect_finals
from tests.fakes.echo_engine import EchoEngine

pytestmark = pytest.mark.integration

LONG = " ".join(["word"] * 40)  # 41 generated words with the echo engine


async def test_cancel_aborts_a_running_request(bus: Bus) -> None:
    engine = EchoEngine(step_s=0.1)
    await bus.start_worker(engine)
    async with bus.client() as client:
        stream = client.stream(LONG, request_id="cancel-running")
        first = await stream.__anext__()
        assert isinstance(first, StreamDelta)
        await client.cancel("cancel-running")
        with pytest.raises(RemoteError) as info:
            async for _ in stream:
                pass
    assert info.value.remote_code == "cancelled"
    assert "cancel-running" in engine._aborted


async def test_cancel_skips_a_queued_request(bus: Bus) -> None:
    engine = EchoEngine(step_s=0.1)
    async with bus.client() as client:
        request = client.build_request(LONG, request_id="cancel-queued")
        replies = client.send(request)
        pending = asyncio.ensure_future(replies.__anext__())
        await asyncio.sleep(0.5)  # published; no worker yet, so it waits in Kafka
        await client.cancel("cancel-queued")
        await bus.start_worker(engine)
        with pytest.raises(RemoteError) as info:
            await pending
    assert info.value.remote_code == "cancelled"
    assert "cancel-queued" not in engine.seen, "a cancelled queued request is never computed"


async def test_deadline_passing_mid_generation_aborts(bus: Bus) -> None:
    engine = EchoEngine(step_s=0.1)
    await bus.start_worker(engine)
    async with bus.client() as client:
        with pytest.raises(RemoteError) as info:
            await client.chat(LONG, deadline_s=1.0, request_id="late")
    assert info.value.remote_code == "deadline_exceeded"
    assert "late" in engine._aborted


async def test_engine_failure_fails_only_that_request(bus: Bus) -> None:
    await bus.start_worker(EchoEngine(step_s=0.01))
    async with bus.client() as client:
        with pytest.raises(RemoteError) as info:
            await client.chat("hello", stop=["FAIL"])
        assert info.value.remote_code == "engine_error"
        ok = await client.chat("still alive")
    assert ok.completion.choices[0].message.content == "echo: w5 w5"


async def test_same_id_is_computed_once_and_answered_again_from_memory(bus: Bus) -> None:
    engine = EchoEngine(step_s=0.1)
    await bus.start_worker(engine)
    async with bus.client() as client:
        request = client.build_request("one two three", request_id="dup")
        first = asyncio.ensure_future(client.chat("one two three", request_id="dup"))
        await asyncio.sleep(0.2)
        # A copy of the same request while the first is in flight (a redelivery).
        async with BusProducer(
            bus.settings.kafka_bootstrap, client_id="t", max_request_bytes=100_000
        ) as producer:
            value, headers = encode(request)
            await producer.send(bus.settings.requests_topic, value, headers, key=b"dup")
        result = await first
        # A client retry after it finished is answered from the stored final.
        again = await client.chat("one two three", request_id="dup")
    assert engine.seen.count("dup") == 1
    assert again.completion == result.completion


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_finishes_in_flight_work_commits_and_exits_zero(
    bus: Bus, sig: signal.Signals
) -> None:
    proc = bus.spawn_worker_process("graceful", step_s=0.05)
    n = 30
    async with bus.client() as client:
        await client.chat("probe")  # the worker process is up and serving
        tasks = [asyncio.ensure_future(client.chat(LONG, request_id=f"g{i}")) for i in range(n)]
        await asyncio.sleep(0.5)  # all in flight: each takes ~2 s
        assert not any(t.done() for t in tasks)
        proc.send_signal(sig)
        results = await asyncio.gather(*tasks)
        code = await asyncio.to_thread(proc.wait, 60)
    answered = {r.request_id for r in results}
    print(
        f"\n[{sig.name}] sent={n} answered={len(results)} lost={n - len(answered)} "
        f"duplicates={len(results) - len(answered)} exit={code}"
    )
    assert code == 0
    assert sorted(r.request_id for r in results) == sorted(f"g{i}" for i in range(n))
    # Everything finished was committed: a new member of the group gets nothing again.
    engine = EchoEngine(step_s=0.01)
    await bus.start_worker(engine, worker_id="after")
    await asyncio.sleep(8)
    assert engine.seen == []


async def test_kill_9_of_one_of_two_workers_loses_nothing(
    bus: Bus, analyst_db: AsyncEngine
) -> None:
    victim = bus.spawn_worker_process("victim", step_s=0.05, max_num_seqs=32)
    bus.spawn_worker_process("survivor", step_s=0.05, max_num_seqs=32)
    await bus.start_auditor()
    n = 500
    ids = {f"k{i}" for i in range(n)}
    wire: dict[str, list[bytes]] = {}
    stop = asyncio.Event()
    async with bus.client(timeout_s=180) as client:
        counter = asyncio.ensure_future(
            collect_finals(bus, client.reply_to.partition, ids, stop, wire)
        )
        await asyncio.sleep(1)  # the counter reads from the end before anything is sent
        tasks = {
            rid: asyncio.ensure_future(client.chat("a b c d e f g h", request_id=rid))
            for rid in ids
        }
        # Kill once work is flowing on both workers.
        while sum(t.done() for t in tasks.values()) < 60:  # noqa: ASYNC110 - polls other tasks
            await asyncio.sleep(0.05)
        victim.kill()
        started = time.monotonic()
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        recovered_s = time.monotonic() - started
        await asyncio.sleep(2)
        stop.set()
        await counter
    answered = [r for r in results if isinstance(r, ChatResult)]
    lost = n - len({r.request_id for r in answered})
    surfaced_dupes = len(answered) - len({r.request_id for r in answered})
    recomputed = sum(1 for finals in wire.values() if len(set(finals)) > 1)
    resent = sum(1 for finals in wire.values() if len(finals) > len(set(finals)))

    async def rows() -> list[tuple[str, int]]:
        async with analyst_db.connect() as conn:
            res = await conn.execute(
                text(
                    "SELECT request_id, count(*) FROM results WHERE request_id = ANY(:ids) "
                    "GROUP BY request_id"
                ),
                {"ids": list(ids)},
            )
            return [(r[0], r[1]) for r in res]

    audit = await rows()
    for _ in range(50):
        if len(audit) == n:
            break
        await asyncio.sleep(0.2)
        audit = await rows()
    print(
        f"\n[kill -9] sent={n} answered={len(answered)} lost={lost} "
        f"duplicates={surfaced_dupes} recomputed_after_crash={recomputed} "
        f"resent_from_answered_log={resent} "
        f"audit_rows={len(audit)} recovery_s={recovered_s:.1f}"
    )
    assert lost == 0
    assert surfaced_dupes == 0
    assert recomputed == 0, "what the victim answered is resent from the answered log"
    assert len(audit) == n and {c for _, c in audit} == {1}


async def test_engine_death_stops_worker_without_committing_unfinished(bus: Bus) -> None:
    # Its engine dies when the 12th request starts: the probe and d0..d9 are under way.
    dying = bus.spawn_worker_process("dying", step_s=0.1, extra_env={"LLMBUS_TEST_DIE_AFTER": "11"})
    ids = [f"d{i}" for i in range(10)]
    async with bus.client(timeout_s=120) as client:
        await client.chat("probe")
        tasks = [asyncio.ensure_future(client.chat(LONG, request_id=r)) for r in ids]
        await asyncio.sleep(0.3)
        last = asyncio.ensure_future(client.chat("x", request_id="the-12th"))
        code = await asyncio.to_thread(dying.wait, 60)
        assert code == 3, "engine death exits non-zero"
        assert not any(t.done() for t in tasks), "unfinished work was not answered"
        # Another worker takes the uncommitted requests over and answers them.
        engine = EchoEngine(step_s=0.01)
        await bus.start_worker(engine, worker_id="heir")
        results = await asyncio.gather(*tasks, last)
    assert sorted(r.request_id for r in results) == sorted([*ids, "the-12th"])
    assert set(ids) <= set(engine.seen)


async def test_kill_9_of_a_real_vllm_worker_loses_nothing(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine
) -> None:
    """The crash test on the real engine: a vLLM worker process dies mid-stream; a
    worker on the session's vLLM engine then takes the group's partitions over."""
    await bus.start_auditor()
    victim = bus.spawn_worker_process(
        "vllm-victim", engine=None, extra_env={"LLMBUS_LOG_LEVEL": "INFO"}
    )
    assert victim.stdout is not None
    while b"serving" not in await asyncio.to_thread(victim.stdout.readline):
        assert victim.poll() is None, "the vLLM worker process failed to start"
    n = 60
    ids = [f"v{i}" for i in range(n)]
    async with bus.client(timeout_s=300) as client:
        tasks = [
            asyncio.ensure_future(client.chat(f"Count to {i}.", max_tokens=48, request_id=rid))
            for i, rid in enumerate(ids)
        ]
        by_victim = 0
        while by_victim < 3:
            by_victim = sum(1 for t in tasks if t.done() and not t.exception())
            await asyncio.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)
        assert by_victim < n, "the victim still had work in flight when killed"
        await bus.start_worker(engine, worker_id="survivor")
        results = await asyncio.gather(*tasks, return_exceptions=True)
    answered = [r for r in results if isinstance(r, ChatResult)]
    lost = n - len({r.request_id for r in answered})
    dupes = len(answered) - len({r.request_id for r in answered})
    async with analyst_db.connect() as conn:
        for _ in range(100):
            rows = (
                await conn.execute(
                    text(
                        "SELECT request_id, count(*) FROM results WHERE request_id = ANY(:ids) "
                        "GROUP BY request_id"
                    ),
                    {"ids": ids},
                )
            ).all()
            if len(rows) == n:
                break
            await asyncio.sleep(0.2)
    print(
        f"\n[kill -9 vLLM worker] sent={n} answered={len(answered)} lost={lost} "
        f"duplicates={dupes} by_victim_before_kill={by_victim} audit_rows={len(rows)}"
    )
    assert lost == 0 and dupes == 0
    assert len(rows) == n and {r[1] for r in rows} == {1}


async def test_answers_of_a_crashed_worker_are_resent_not_recomputed(bus: Bus) -> None:
    """A worker that answered but never committed dies; its successor answers the
    redelivered requests from the answered log without computing them again."""
    crashing = bus.spawn_worker_process(
        "no-commits", step_s=0.01, extra_env={"LLMBUS_COMMIT_INTERVAL_S": "3600"}
    )
    ids = [f"a{i}" for i in range(20)]
    async with bus.client() as client:
        first = await asyncio.gather(*(client.chat("x y", request_id=r) for r in ids))
        crashing.kill()
        await asyncio.to_thread(crashing.wait, 30)
        heir = EchoEngine(step_s=0.01)
        await bus.start_worker(heir, worker_id="heir")
        # The redelivered copies are answered again; a client retry shows it end to end.
        again = await asyncio.gather(*(client.chat("x y", request_id=r) for r in ids))
    recomputed = [rid for rid in ids if rid in heir.seen]
    print(
        f"\n[answered log] sent={len(ids)} answered={len(again)} lost=0 duplicates=0 "
        f"recomputed={len(recomputed)}"
    )
    assert recomputed == []
    assert [r.completion for r in again] == [r.completion for r in first]
