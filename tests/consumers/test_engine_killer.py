"""A request that kills the engine itself is found and refused instead of killing every
worker that takes it (real Kafka; the stand-in engine dies globally, as vLLM's does)."""

from __future__ import annotations

import asyncio

import pytest

from llmbus.errors import RemoteError
from llmbus.schemas import ChatResult
from llmbus.schemas.wire import header
from tests.conftest import Bus
from tests.consumers.test_bad_input import read_dead_letters
from tests.fakes.echo_engine import KILLER_PROMPT, EchoEngine

pytestmark = pytest.mark.integration

PROMPT = " ".join(["word"] * 12)


async def test_a_request_that_kills_the_engine_is_run_alone_then_refused(bus: Bus) -> None:
    innocent_ids = [f"ok{i}" for i in range(6)]
    async with bus.client(timeout_s=180) as client:
        calls = {
            rid: asyncio.ensure_future(client.chat(PROMPT, request_id=rid)) for rid in innocent_ids
        }
        calls["killer"] = asyncio.ensure_future(
            client.chat(f"please {KILLER_PROMPT} now", request_id="killer")
        )
        await asyncio.sleep(1)  # all seven are on Kafka before a worker starts

        # 1st death: the killer dies beside the six others; all seven are marked.
        first = bus.spawn_worker_process("first", step_s=0.1)
        assert await asyncio.to_thread(first.wait, 90) == 3, "engine death exits 3"
        assert not any(c.done() for c in calls.values()), "nothing was answered"

        # 2nd death: the next worker runs each suspect alone, so the killer dies alone.
        second = bus.spawn_worker_process("second", step_s=0.02)
        assert await asyncio.to_thread(second.wait, 90) == 3

        # The third refuses the killer without running it and answers what is left.
        heir = EchoEngine(step_s=0.01)
        await bus.start_worker(heir, worker_id="third")
        outcomes = await asyncio.gather(*calls.values(), return_exceptions=True)
        answered_by_second = len(innocent_ids) - len(set(heir.seen))

    by_id = dict(zip(calls, outcomes, strict=True))
    killer = by_id.pop("killer")
    assert isinstance(killer, RemoteError), killer
    assert killer.remote_code == "engine_error"
    assert "crashed the inference engine" in killer.message
    assert "killer" not in heir.seen, "the culprit never reaches a third engine"
    results = [r for r in by_id.values() if isinstance(r, ChatResult)]
    lost = len(innocent_ids) - len({r.request_id for r in results})
    assert all(r.completion.choices[0].message.content.startswith("echo:") for r in results)

    dead = await read_dead_letters(bus.settings.kafka_bootstrap, bus.settings.dead_letter_topic, 1)
    codes = {header(r.headers, "llmbus-dlq-code") for r in dead}
    print(
        f"\n[engine killer] sent={len(calls)} innocents_answered={len(results)} lost={lost} "
        f"duplicates={len(results) - len({r.request_id for r in results})} "
        f"engine_deaths=2 answered_by_second={answered_by_second} dead_letters={len(dead)}"
    )
    assert lost == 0
    assert len(dead) == 1 and codes == {"engine_error"}
    assert dead[0].value is not None and KILLER_PROMPT.encode() in dead[0].value
