"""Conversation keys through the gateway: a header names the conversation, every turn of
it is keyed alike on Kafka, scoped to the caller (real gateway, Kafka, stand-in engine)."""

from __future__ import annotations

import openai
import pytest

from llmbus.bus import TopicPartition, read_all
from llmbus.gateway.auth import Principal
from llmbus.gateway.chat import conversation_key
from llmbus.schemas import ChatCompletionRequest
from llmbus.schemas.wire import H_REQUEST_ID, header
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine
from tests.gateway.keys import create_key


def test_the_key_is_scoped_to_tenant_user_and_openai_user() -> None:
    def key(tenant: str, user: str | None, body_user: str | None, conv: str) -> str | None:
        who = Principal(
            subject="s", key_id=None, tenant_id=tenant, user_id=user, rpm=None, tpm=None
        )
        body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}],
                                     user=body_user)  # fmt: skip
        return conversation_key(who, body, {"x-conversation-id": conv})

    base = key("acme", "ana", None, "chat 1 / ü")
    assert base is not None and base.startswith("conv-") and len(base) == 37
    assert base == key("acme", "ana", None, "chat 1 / ü")
    others = {
        key("other", "ana", None, "chat 1 / ü"),
        key("acme", "bob", None, "chat 1 / ü"),
        key("acme", "ana", "end-user-7", "chat 1 / ü"),
        key("acme", "ana", None, "chat 2"),
    }
    assert base not in others and len(others) == 4
    who = Principal(subject="s", key_id=None, tenant_id="acme", user_id=None, rpm=None, tpm=None)
    body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}])
    assert conversation_key(who, body, {}) is None
    assert conversation_key(who, body, {"x-openwebui-chat-id": "c1"}) is not None


@pytest.mark.integration
async def test_turns_named_by_a_header_share_one_kafka_key(bus: Bus) -> None:
    s = bus.settings
    await bus.start_worker(EchoEngine(step_s=0.01))
    url = await bus.start_gateway()
    keys = {t: await create_key(bus, t) for t in ("acme", "globex")}
    for key in keys.values():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        for turn in range(3):
            await client.chat.completions.create(
                model=s.model,
                messages=[{"role": "user", "content": f"turn {turn}"}],
                extra_headers={"X-Conversation-Id": "support-chat-1"},
            )
        streamed = await client.chat.completions.create(
            model=s.model,
            messages=[{"role": "user", "content": "streamed turn"}],
            extra_headers={"X-Conversation-Id": "support-chat-1"},
            stream=True,
        )
        async for _ in streamed:
            pass
    plain = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=keys["acme"], max_retries=0)
    await plain.chat.completions.create(model=s.model, messages=[{"role": "user", "content": "x"}])

    records = []
    for partition in range(s.request_partitions):
        found, _ = await read_all(
            s.kafka_bootstrap, TopicPartition(s.requests_topic, partition), client_id="check"
        )
        records += found
    conversation_keys = [r.key for r in records if r.key and r.key.startswith(b"conv-")]
    assert len(conversation_keys) == 8
    assert len(set(conversation_keys)) == 2, "one key per tenant's conversation"
    (unkeyed,) = [r for r in records if not (r.key or b"").startswith(b"conv-")]
    assert unkeyed.key == (header(unkeyed.headers, H_REQUEST_ID) or "").encode()
