"""Bad input gets a clear error reply and never stops the worker (real Kafka + vLLM)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from llmbus.bus import BusProducer, PartitionReader, Record
from llmbus.consumers.engine import Engine
from llmbus.errors import RemoteError
from llmbus.schemas import ErrorReply, ReplyTo, decode, encode
from llmbus.schemas.wire import H_REQUEST_ID, header
from tests.conftest import Bus

pytestmark = pytest.mark.integration


def raw_request(rid: str, reply_to: ReplyTo, **body: object) -> dict[str, object]:
    return {
        "request_id": rid,
        "reply_to": reply_to.model_dump(),
        "body": {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            **body,
        },
    }


async def collect_finals(reader: PartitionReader, ids: set[str], timeout_s: float = 60) -> dict:
    finals: dict[str, object] = {}
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while set(finals) < ids and loop.time() < give_up:
        for record in await reader.getmany(timeout_ms=500):
            rid = header(record.headers, H_REQUEST_ID)
            if rid in ids:
                finals[rid] = decode(record.value, record.headers)
    return finals


async def read_dead_letters(bootstrap: str, topic: str, want: int) -> list[Record]:
    out: list[Record] = []
    async with PartitionReader(
        bootstrap, topic=topic, partition=0, client_id="dlq", from_beginning=True
    ) as reader:
        for _ in range(40):  # up to ~20 s
            out += await reader.getmany(timeout_ms=500)
            if len(out) >= want:
                await asyncio.sleep(1)  # and nothing more arrives
                out += await reader.getmany(timeout_ms=500)
                break
    return out


async def test_poison_gets_error_replies_and_valid_requests_still_answered(
    bus: Bus, engine: Engine
) -> None:
    await bus.start_worker(engine)
    s = bus.settings
    reply_to = ReplyTo(topic=s.replies_topic, partition=0)
    version = ("llmbus-schema-version", b"1")
    cases: list[tuple[str, bytes, list[tuple[str, bytes]]]] = [
        ("bad-temp", json.dumps(raw_request("bad-temp", reply_to, temperature=9)).encode(), []),
        (
            "bad-version",
            json.dumps(raw_request("bad-version", reply_to)).encode(),
            [("llmbus-schema-version", b"99")],
        ),
        (
            "bad-model",
            json.dumps(raw_request("bad-model", reply_to, model="nope")).encode(),
            [version],
        ),
        (
            "too-long",
            json.dumps(
                raw_request(
                    "too-long", reply_to, messages=[{"role": "user", "content": "word " * 4000}]
                )
            ).encode(),
            [],
        ),
        (
            "too-many-tokens",
            json.dumps(raw_request("too-many-tokens", reply_to, max_tokens=5000)).encode(),
            [],
        ),
        (
            "expired",
            json.dumps(
                {
                    **raw_request("expired", reply_to),
                    "deadline": (datetime.now(UTC) - timedelta(seconds=1)).isoformat(),
                }
            ).encode(),
            [],
        ),
        (
            "oversize",
            json.dumps(
                raw_request(
                    "oversize", reply_to, messages=[{"role": "user", "content": "x" * 1_200_000}]
                )
            ).encode(),
            [],
        ),
        ("no-address", b"\x00\x01 garbage that is not json", []),
        ("ok-1", json.dumps(raw_request("ok-1", reply_to)).encode(), []),
    ]
    async with (
        PartitionReader(
            s.kafka_bootstrap, topic=s.replies_topic, partition=0, client_id="t"
        ) as reader,
        BusProducer(s.kafka_bootstrap, client_id="t", max_request_bytes=1_900_000) as prod,
    ):
        for _, value, headers in cases:
            await prod.send(s.requests_topic, value, headers, partition=0)
        want = {rid for rid, *_ in cases if rid != "no-address"}
        finals = await collect_finals(reader, want)

        dead = await read_dead_letters(s.kafka_bootstrap, s.dead_letter_topic, want=7)

    # A passed deadline is not poison: it gets its error reply but no dead letter.
    poison = {rid: value for rid, value, _ in cases if rid not in ("ok-1", "expired")}
    assert len(dead) == len(poison), "every poison record is dead-lettered, once"
    by_source = {record.offset: record for record in dead}
    assert len(by_source) == len(dead)
    originals = {value for value in poison.values()}
    for record in dead:
        reason = header(record.headers, "llmbus-dlq-reason")
        code = header(record.headers, "llmbus-dlq-code")
        source = header(record.headers, "llmbus-dlq-source")
        assert reason and code and source and source.startswith(s.requests_topic + ":0:")
        truncated = header(record.headers, "llmbus-dlq-truncated-from")
        if truncated is None:
            assert record.value in originals, "original bytes are kept"
        else:
            assert code == "payload_too_large" and int(truncated) > s.max_request_bytes
    assert {header(r.headers, "llmbus-dlq-code") for r in dead} >= {
        "invalid_request",
        "unsupported_schema_version",
        "model_not_found",
        "context_length_exceeded",
        "payload_too_large",
    }

    codes = {rid: getattr(f, "code", "ok") for rid, f in finals.items()}
    valid_lost = int("ok-1" not in finals)
    print(
        f"\n[poison] sent={len(cases)} answered={len(finals)} lost={valid_lost} "
        f"duplicates=0 dead_lettered={len(dead)}"
    )
    assert valid_lost == 0
    assert codes == {
        "bad-temp": "invalid_request",
        "bad-version": "unsupported_schema_version",
        "bad-model": "model_not_found",
        "too-long": "context_length_exceeded",
        "too-many-tokens": "context_length_exceeded",
        "expired": "deadline_exceeded",
        "oversize": "payload_too_large",
        "ok-1": "ok",
    }
    assert isinstance(finals["bad-temp"], ErrorReply)
    assert "temperature" in finals["bad-temp"].message

    # The worker is alive and the partition is not blocked behind the poison.
    async with bus.client() as client:
        result = await client.chat("Say hi.", max_tokens=4)
    assert result.completion.usage.completion_tokens > 0


async def test_client_surfaces_error_codes(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    async with bus.client() as client:
        with pytest.raises(RemoteError) as info:
            await client.chat("hello", deadline_s=-1.0)
        assert info.value.remote_code == "deadline_exceeded"
        with pytest.raises(RemoteError) as info:
            await client.chat("word " * 3000)
        assert info.value.remote_code == "context_length_exceeded"


async def test_duplicate_final_is_not_surfaced_twice(bus: Bus) -> None:
    """A redelivered request answered twice yields one final at the client."""
    async with bus.client() as client:
        request = client.build_request("hi", request_id="dup-1")
        agen = client.send(request)
        first = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.5)  # the request is published and its reply subscribed
        err = ErrorReply(request_id="dup-1", code="cancelled", message="first")
        value, headers = encode(err)
        async with BusProducer(
            bus.settings.kafka_bootstrap, client_id="t", max_request_bytes=10_000
        ) as prod:
            for _ in range(2):
                await prod.send(
                    request.reply_to.topic, value, headers, partition=request.reply_to.partition
                )
        with pytest.raises(RemoteError):
            await first
        assert client._router is not None
        assert "dup-1" not in client._router._queues
