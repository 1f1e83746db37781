"""The OpenAI surface real clients send (structured outputs, tools, n, logprobs, content
parts, legacy completions), through the gateway with the official SDK and over Kafka
with ``LlmbusClient``, on real Kafka, PostgreSQL and vLLM (the default model)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import jsonschema
import openai
import pytest
import torch
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.consumers.engine import Engine
from llmbus.errors import InvalidRequestError
from llmbus.schemas import ChatResult, StreamDelta, TextCompletion
from tests.conftest import Bus
from tests.e2e.test_chat_path import wait_for_rows
from tests.gateway.keys import create_key
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PERSON_SCHEMA = {
    "type": "object",
    # Bounded, so that a sampled name cannot outrun max_tokens and cut the JSON short.
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


class Person(BaseModel):
    name: str
    age: int


async def test_openai_sdk_against_the_gateway(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    url = await bus.start_gateway({"LLMBUS_MAX_N": "4"})
    tenant = f"surface-{uuid.uuid4().hex[:8]}"
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=await create_key(bus, tenant), max_retries=0
    )
    model = bus.settings.model
    ask = [{"role": "user", "content": "Invent a person. Reply as JSON with name and age."}]
    good_calls = 0

    parsed = await client.chat.completions.parse(
        model=model, messages=ask, response_format=Person, temperature=0, max_tokens=60
    )
    good_calls += 1
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and person.name

    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    forced = await client.chat.completions.create(
        model=model, messages=weather, tools=[WEATHER], max_tokens=120, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    good_calls += 1
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    follow_up = [
        *weather,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'},
    ]
    answer = await client.chat.completions.create(
        model=model, messages=follow_up, tools=[WEATHER], max_tokens=30, temperature=0
    )
    good_calls += 1
    assert answer.choices[0].message.content

    three = await client.chat.completions.create(
        model=model, messages=weather, n=3, max_tokens=8, temperature=0.9
    )
    good_calls += 1
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert three.usage is not None and three.usage.completion_tokens > 8

    probed = await client.chat.completions.create(
        model=model, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
        presence_penalty=0.5, frequency_penalty=0.1, logit_bias={"0": -1},
        max_completion_tokens=5, extra_body={"top_k": 20, "min_p": 0.01},
    )  # fmt: skip
    good_calls += 1
    content = probed.choices[0].logprobs.content if probed.choices[0].logprobs else None
    assert content and all(len(t.top_logprobs) == 2 for t in content)

    indexes, usage, tool_fragments = set(), None, []
    stream = await client.chat.completions.create(
        model=model, messages=weather, tools=[WEATHER], n=2, max_tokens=60, temperature=0.5,
        tool_choice="required", stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    good_calls += 1
    async for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            indexes.add(c.index)
            tool_fragments += c.delta.tool_calls or []
    assert indexes == {0, 1} and usage is not None and usage.completion_tokens > 0
    assert tool_fragments and tool_fragments[0].function.name == "get_weather"

    legacy = await client.completions.create(
        model=model, prompt=["The capital of France is", "1, 2, 3,"], max_tokens=6,
        temperature=0, logprobs=1, echo=True,
    )  # fmt: skip
    good_calls += 1
    assert [c.index for c in legacy.choices] == [0, 1]
    assert legacy.choices[0].text.startswith("The capital of France is")
    assert legacy.choices[0].logprobs and legacy.choices[0].logprobs.tokens
    pieces = []
    async for chunk in await client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
    ):
        pieces += [c.text for c in chunk.choices]
    good_calls += 1
    assert "".join(pieces).strip()

    refused = {
        "invalid JSON schema": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "nonsense"}},
            }
        },
        "not among the tools": {
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "launch"}},
        },
        "'image_url' is not supported": {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
        "n is at most 4": {"n": 5},
        "less than or equal to 20": {"logprobs": True, "top_logprobs": 21},
        "audio is not supported": {"audio": {"voice": "alloy", "format": "wav"}},
        "frobnicate": {"frobnicate": True},
        "greedy decoding has one answer": {"n": 2, "temperature": 0},
    }
    for fragment, extra in refused.items():
        body = {"model": model, "messages": weather, "max_tokens": 4, **extra}
        with pytest.raises(openai.BadRequestError, match=fragment):
            await client.post("/chat/completions", body=body, cast_to=httpx_json())
    with pytest.raises(openai.BadRequestError, match="suffix is not supported"):
        await client.completions.create(model=model, prompt="a", suffix="b")
    seeded = {"model": model, "messages": weather, "max_tokens": 4, "seed": 3}
    await client.chat.completions.create(**seeded, temperature=0)  # greedy: harmless anywhere
    good_calls += 1
    if torch.cuda.is_available():
        await client.chat.completions.create(**seeded, temperature=0.8)
        good_calls += 1
    else:
        # vLLM's CPU build dies on seeded sampling under load: refused by the worker, and
        # the engine lives on (the next call is answered).
        with pytest.raises(openai.BadRequestError, match="seed is not supported"):
            await client.chat.completions.create(**seeded, temperature=0.8)
        good_calls += 1  # refused by the worker, so it reached the trail
        assert (await client.completions.create(model=model, prompt="a", max_tokens=2)).choices
        good_calls += 1

    # Every call that reached Kafka is in the trail with what it asked for; nothing that
    # the gateway refused got there.
    rows = await wait_for_rows(
        analyst_db,
        "SELECT q.params, r.completion FROM requests q JOIN results r USING (request_id) "
        "WHERE q.tenant_id = :t",
        {"t": tenant},
        want=good_calls,
    )
    await asyncio.sleep(1)  # a refused request, had it been enqueued, would show by now
    rows = await wait_for_rows(
        analyst_db, "SELECT q.params FROM requests q WHERE q.tenant_id = :t", {"t": tenant}, 0
    )
    assert len(rows) == good_calls
    assert any(r["params"].get("tools") == [WEATHER] for r in rows)
    assert any(r["params"].get("response_format", {}).get("type") == "json_schema" for r in rows)


def whitespace_drift(text: str) -> bool:
    """An answer that ran to max_tokens emitting the whitespace JSON allows between tokens
    (a sampled small model can): it starts as the object, and past its first 80 characters
    holds nothing but whitespace. The grammar held; the model wandered."""
    return text.startswith("{") and len(text) > 80 and not text[80:].strip()


def httpx_json() -> type:
    import httpx

    return httpx.Response


async def test_structured_outputs_tools_and_completions_over_kafka(
    bus: Bus, engine: Engine
) -> None:
    await bus.start_worker(engine)
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
    }
    prompts = [f"Invent person number {i}. Reply as JSON with name and age." for i in range(50)]
    async with bus.client() as client:

        async def one(prompt: str, temperature: float) -> ChatResult:
            return await client.chat(
                prompt, response_format=response_format, temperature=temperature,
                max_tokens=300,
            )  # fmt: skip

        for temperature in (0.0, 1.0):
            results = await asyncio.gather(*(one(p, temperature) for p in prompts))
            valid, adrift = 0, 0
            for result in results:
                finish = result.completion.choices[0].finish_reason
                if finish == "length" and temperature > 0 and whitespace_drift(result.text()):
                    adrift += 1  # inside the grammar, but the model's choice, not ours
                    continue
                assert finish == "stop", f"cut short ({finish}): {result.text()!r}"
                jsonschema.validate(json.loads(result.text()), PERSON_SCHEMA)
                valid += 1
            print(
                f"json_schema at temperature {temperature}: {valid}/50 parse and validate, "
                f"{adrift} drifted into whitespace until max_tokens"
            )
            # Greedy, every answer is whole; sampled, a small model rarely drifts.
            assert valid == 50 if temperature == 0 else valid >= 47

        forced = await client.chat(
            "What is the weather in Paris?", tools=[WEATHER], max_tokens=120, temperature=0,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )  # fmt: skip
        (call,) = forced.completion.choices[0].message.tool_calls or []  # type: ignore[union-attr]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments)

        deltas, final = [], None
        async for reply in client.stream("Count to five.", n=2, max_tokens=12, temperature=0.7):
            if isinstance(reply, StreamDelta):
                deltas.append(reply)
            else:
                final = reply
        assert final is not None and len(final.completion.choices) == 2
        assert {c["index"] for d in deltas if d.chunk for c in d.chunk["choices"]} == {0, 1}

        text = await client.complete(["Paris is", "Rome is"], max_tokens=5, temperature=0)
        assert isinstance(text.completion, TextCompletion)
        assert len(text.completion.choices) == 2 and text.text(1)

        for bad in (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            {"logprobs": True, "top_logprobs": 21},
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        ):
            with pytest.raises(InvalidRequestError):
                await client.chat("hi", **bad)
        with pytest.raises(InvalidRequestError, match="image_url"):
            await client.chat([{"role": "user", "content": [{"type": "image_url"}]}])


async def test_batch_lines_of_every_kind_and_a_replay_that_sends_them_again(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine, tmp_path: Path
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    model = bus.settings.model
    json_body = {
        "model": model,
        "messages": [{"role": "user", "content": "Invent a person as JSON."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "person", "strict": True, "schema": PERSON_SCHEMA},
        },
        "max_tokens": 60,
        "temperature": 0,
    }
    tool_body = {
        "model": model,
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "max_completion_tokens": 40,
        "temperature": 0,
    }
    plain_body = {"model": model, "messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8}
    text_body = {"model": model, "prompt": "Paris is the capital of", "max_tokens": 4}
    lines = [
        ("json", "/v1/chat/completions", json_body),
        ("tool", "/v1/chat/completions", tool_body),
        ("plain", "/v1/chat/completions", plain_body),
        ("text", "/v1/completions", text_body),
    ]
    path = tmp_path / "every-kind.jsonl"
    path.write_text(
        "".join(
            json.dumps({"custom_id": c, "method": "POST", "url": u, "body": b}) + "\n"
            for c, u, b in lines
        )
    )
    code, out, err = await run_cli("batch", "submit", str(path), "--wait", env=bus.env())
    assert code == 0, err
    batch_id = out.splitlines()[0]
    code, _, err = await run_cli(
        "batch", "results", batch_id, "-o", str(tmp_path / "out.jsonl"), env=bus.env()
    )
    assert code == 0, err
    results = {
        r["custom_id"]: r["response"]["body"]
        for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())
    }
    assert set(results) == {"json", "tool", "plain", "text"}
    jsonschema.validate(
        json.loads(results["json"]["choices"][0]["message"]["content"]), PERSON_SCHEMA
    )
    tool_message = results["tool"]["choices"][0]["message"]
    assert tool_message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert results["plain"]["choices"][0]["message"]["content"]
    assert results["text"]["object"] == "text_completion" and results["text"]["choices"][0]["text"]

    originals = await wait_for_rows(
        analyst_db,
        "SELECT request_id, params FROM requests WHERE batch_id = :b",
        {"b": batch_id},
        want=4,
    )
    ids = [r["request_id"] for r in originals]
    args = [a for rid in ids for a in ("--request-id", rid)]
    code, out, err = await run_cli("replay", *args, "--wait", env=bus.env())
    assert code == 0, err
    run_id = out.splitlines()[0]
    replayed = await wait_for_rows(
        analyst_db,
        "SELECT replay_of, params FROM requests WHERE batch_id = :b",
        {"b": run_id},
        want=4,
    )
    before = {r["request_id"]: r["params"] for r in originals}
    for row in replayed:
        assert row["params"] == before[row["replay_of"]], "the replay sent a different request"
    tools_replayed = [r for r in replayed if r["params"].get("tools")]
    assert tools_replayed and tools_replayed[0]["params"]["tools"] == [WEATHER]
    assert any("response_format" in r["params"] for r in replayed)
    assert any("prompt" in r["params"] for r in replayed)
