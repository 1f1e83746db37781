"""``POST /v1/embeddings`` and embedding batches through the gateway with the official
``openai`` SDK, on a real embedding worker (all-MiniLM-L6-v2), Kafka and PostgreSQL."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import openai
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.consumers.engine import Engine
from llmbus.stack.model_cache import DEFAULT_MODEL
from tests.conftest import Bus
from tests.e2e.test_chat_path import wait_for_rows
from tests.gateway.keys import create_key
from tests.gateway.test_gateway_batches import run_batch

pytestmark = pytest.mark.integration


def gateway_env(bus: Bus) -> dict[str, str]:
    return {
        "LLMBUS_GATEWAY_MODELS": json.dumps([DEFAULT_MODEL]),
        "LLMBUS_GATEWAY_EMBEDDING_MODELS": json.dumps([bus.settings.model]),
    }


async def test_openai_sdk_embeddings(
    embedding_bus: Bus, embedding_engine: Engine, analyst_db: AsyncEngine
) -> None:
    bus = embedding_bus
    model = bus.settings.model
    await bus.start_worker(embedding_engine)
    await bus.start_auditor()
    url = await bus.start_gateway(gateway_env(bus))
    key = await create_key(bus, "emb-team", "--tpm", "1000")
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)

    one = await client.embeddings.create(model=model, input="The cat sits on the mat.")
    assert one.object == "list" and one.model == model and len(one.data) == 1
    assert len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens > 0 and one.usage.total_tokens == one.usage.prompt_tokens

    texts = ["A kitten rests on a rug.", "Markets fell sharply.", "Bake bread at home."]
    listed = await client.embeddings.create(model=model, input=texts, encoding_format="float")
    assert [d.index for d in listed.data] == [0, 1, 2]
    assert all(len(d.embedding) == 384 for d in listed.data)
    # Left to itself the SDK asks for base64 and decodes it: the same vectors.
    decoded = await client.embeddings.create(model=model, input=texts)
    for a, b in zip(decoded.data, listed.data, strict=True):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-5
    raw = await client.embeddings.create(model=model, input=texts, encoding_format="base64")
    packed = base64.b64decode(raw.data[0].embedding)  # type: ignore[arg-type]
    assert len(packed) == 384 * 4
    assert struct.unpack("<384f", packed)[0] == pytest.approx(listed.data[0].embedding[0], abs=1e-6)

    models = await client.models.list()
    kinds = {m.id: getattr(m, "kind", None) for m in models.data}
    assert kinds == {DEFAULT_MODEL: "chat", model: "embedding"}

    # Bad input: clear OpenAI errors naming what is wrong.
    with pytest.raises(openai.BadRequestError, match="input"):
        await client.embeddings.create(model=model, input=[])
    with pytest.raises(openai.BadRequestError, match="at most 2048 inputs"):
        await client.embeddings.create(model=model, input=["x"] * 2049)
    with pytest.raises(openai.BadRequestError) as too_long:
        await client.embeddings.create(model=model, input="word " * 300)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        await client.embeddings.create(model=model, input="x", dimensions=64)
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="no-such-embedder", input="x")
    with pytest.raises(openai.BadRequestError, match="use /v1/embeddings"):
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError, match="use /v1/chat/completions"):
        await client.embeddings.create(model=DEFAULT_MODEL, input="x")
    async with httpx.AsyncClient() as http:
        extra = await http.post(
            f"{url}/v1/embeddings",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "input": "x", "truncate": "END"},
        )
    assert extra.status_code == 400 and "truncate" in extra.text

    # Inputs count against the key's tokens per minute (~4 characters a token).
    with pytest.raises(openai.RateLimitError):
        await client.embeddings.create(model=model, input=["y" * 2000] * 3)

    calls = await wait_for_rows(
        analyst_db,
        "SELECT status, request_id, model FROM gateway_calls"
        " WHERE tenant_id = 'emb-team' AND path = '/v1/embeddings'",
        {},
        want=12,
    )
    statuses = sorted(c["status"] for c in calls)
    assert statuses == sorted([200] * 4 + [400] * 6 + [404, 429]), statuses
    answered = [c["request_id"] for c in calls if c["status"] == 200]
    rows = await wait_for_rows(
        analyst_db,
        "SELECT request_id, params FROM requests WHERE request_id = ANY(:ids)",
        {"ids": answered},
        want=4,
    )
    assert sorted(r["params"]["input"] for r in rows if isinstance(r["params"]["input"], str)) == [
        "The cat sits on the mat."
    ]


async def test_embedding_batch_through_the_batches_api(
    embedding_bus: Bus, embedding_engine: Engine
) -> None:
    bus = embedding_bus
    await bus.start_worker(embedding_engine)
    await bus.start_auditor()
    url = await bus.start_gateway(gateway_env(bus))
    client = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=await create_key(bus, "emb-batch"), max_retries=0
    )
    lines = [
        {
            "custom_id": f"doc-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": bus.settings.model, "input": f"document number {i}"},
        }
        for i in range(20)
    ]
    _, _, results = await run_batch(client, lines, "/v1/embeddings")
    assert sorted(r["custom_id"] for r in results) == sorted(x["custom_id"] for x in lines)
    for result in results:
        body = result["response"]["body"]
        assert result["response"]["status_code"] == 200 and body["object"] == "list"
        assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 384
        assert body["usage"]["prompt_tokens"] > 0
