"""The gateway with the official ``openai`` SDK, unmodified, against a real gateway
process, worker (vLLM, default model) and auditor."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.consumers.engine import Engine
from tests.conftest import Bus
from tests.e2e.test_chat_path import wait_for_rows
from tests.gateway.keys import create_key

pytestmark = pytest.mark.integration


async def test_openai_sdk_sync_and_async_streaming_and_not(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    url = await bus.start_gateway()
    tenant = f"sdk-{uuid.uuid4().hex[:8]}"
    key = await create_key(bus, tenant, "--user", "svc-a")
    model = bus.settings.model
    question = [{"role": "user", "content": "What is the capital of France?"}]

    aclient = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    models = await aclient.models.list()
    assert [m.id for m in models.data] == [model]

    done = await aclient.chat.completions.create(
        model=model, messages=question, max_tokens=16, temperature=0, user="body-user-ignored"
    )
    assert "Paris" in done.choices[0].message.content
    assert done.usage.completion_tokens > 0 and done.object == "chat.completion"

    pieces = []
    stream = await aclient.chat.completions.create(
        model=model, messages=question, max_tokens=16, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
    assert "".join(pieces) == done.choices[0].message.content  # greedy: same answer
    assert usage is not None and usage.completion_tokens == done.usage.completion_tokens

    def sync_calls() -> tuple[str, str]:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        one = client.chat.completions.create(
            model=model, messages=question, max_tokens=16, temperature=0
        )
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=model, messages=question, max_tokens=16, temperature=0, stream=True
            )
            if c.choices
        )
        return one.choices[0].message.content or "", streamed

    sync_one, sync_streamed = await asyncio.to_thread(sync_calls)
    assert sync_one == sync_streamed == done.choices[0].message.content

    # Tenant and user come from the key, never from the body; every call is audited.
    rows = await wait_for_rows(
        analyst_db,
        "SELECT tenant_id, user_id, metadata FROM requests WHERE tenant_id = :t",
        {"t": tenant},
        want=4,
    )
    assert len(rows) == 4
    assert {r["user_id"] for r in rows} == {"svc-a"}
    assert {r["metadata"]["via"] for r in rows} == {"gateway"}
    calls = await wait_for_rows(
        analyst_db,
        "SELECT path, status, request_id, model FROM gateway_calls WHERE tenant_id = :t",
        {"t": tenant},
        want=5,
    )
    assert sorted((c["path"], c["status"]) for c in calls) == sorted(
        [("/v1/models", 200)] + [("/v1/chat/completions", 200)] * 4
    )
    assert all(c["request_id"] for c in calls if c["path"] == "/v1/chat/completions")


async def test_bad_requests_get_openai_errors(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    url = await bus.start_gateway(
        {"LLMBUS_GATEWAY_MAX_BODY_BYTES": "20000", "LLMBUS_GATEWAY_MAX_MESSAGES": "4",
         "LLMBUS_GATEWAY_MAX_TOKENS": "64"}
    )  # fmt: skip
    key = await create_key(bus, "errors")
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    msg = [{"role": "user", "content": "hi"}]
    model = bus.settings.model

    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="no-such-model", messages=msg)
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens is at most 64"):
        await client.chat.completions.create(model=model, messages=msg, max_tokens=65)
    with pytest.raises(openai.BadRequestError, match="at most 4 messages"):
        await client.chat.completions.create(model=model, messages=msg * 5, max_tokens=4)
    with pytest.raises(openai.BadRequestError) as bad_field:
        await client.chat.completions.create(model=model, messages=msg, temperature=7)
    assert bad_field.value.param == "temperature"
    long_prompt = [{"role": "user", "content": "word " * 3000}]  # under 20 kB is not enough
    with pytest.raises(openai.APIStatusError) as too_big:
        await client.chat.completions.create(model=model, messages=long_prompt * 2, max_tokens=4)
    assert too_big.value.status_code == 413

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
        broken = await http.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"content-type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["type"] == "invalid_request_error"
        huge = await http.post(
            "/v1/chat/completions",
            content=b"x" * 30000,
            headers={"content-type": "application/json"},
        )
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
        # A context that does not fit is the worker's verdict, still answered as a 400.
        over = await http.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": [{"role": "user", "content": "hello " * 2400}],
                "max_tokens": 8,
            },
        )
        assert over.status_code == 400 and over.json()["error"]["code"] == "context_length_exceeded"
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "kafka": True,
            "postgres": True,
        }
        metrics = await http.get("/metrics")
        assert (
            'llmbus_gateway_calls_total{route="/v1/chat/completions",status="404"} 1.0'
            in metrics.text
        )


async def test_client_disconnect_mid_stream_cancels_the_request(
    bus: Bus, engine: Engine, analyst_db: AsyncEngine
) -> None:
    await bus.start_worker(engine)
    await bus.start_auditor()
    url = await bus.start_gateway()
    key = await create_key(bus, "disconnect")
    body = {
        "model": bus.settings.model,
        "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        seen = 0
        async for line in response.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get(
                "content"
            ):
                seen += 1
            if seen >= 3:
                break  # leaving the block closes the connection mid-stream
    rows = await wait_for_rows(
        analyst_db,
        "SELECT status, error_code FROM results WHERE request_id = :r",
        {"r": request_id},
        want=1,
        timeout_s=60,
    )
    assert rows == [{"status": "error", "error_code": "cancelled"}], rows
