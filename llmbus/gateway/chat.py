"""``POST /v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``: OpenAI's
request in, llmbus through Kafka, OpenAI's object (or its chunks as server-sent events)
out."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio

from llmbus.errors import LlmbusError
from llmbus.gateway.auth import Principal
from llmbus.gateway.openai_errors import GatewayError, from_llmbus
from llmbus.producers import LlmbusClient
from llmbus.schemas import (
    ChatCompletionRequest,
    ChatRequest,
    ChatResult,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    StreamDelta,
)


class ChatCompletionBody(ChatCompletionRequest):
    """What the gateway accepts: the request body plus OpenAI's ``stream`` switch."""

    stream: bool = False


class CompletionBody(CompletionRequest):
    stream: bool = False


Body = ChatCompletionBody | CompletionBody | EmbeddingRequest


def prompt_chars(body: Body) -> int:
    """Characters the engine will read: messages and tools, prompts, or inputs (a token
    id counted as the ~4 characters a token stands for)."""
    if isinstance(body, ChatCompletionBody):
        tools = json.dumps([t.model_dump() for t in body.tools or ()]) if body.tools else ""
        return sum(len(m.text()) for m in body.messages) + len(tools)
    if isinstance(body, EmbeddingRequest):
        return sum(len(i) if isinstance(i, str) else 4 * len(i) for i in body.inputs())
    return sum(len(p) for p in body.prompts())


CONVERSATION_HEADERS = ("x-conversation-id", "x-openwebui-chat-id")
"""Where callers name the conversation a request is a turn of: ours, and Open WebUI's
(sent with ENABLE_FORWARD_USER_INFO_HEADERS)."""


def conversation_key(principal: Principal, body: Body, headers: Mapping[str, str]) -> str | None:
    """The Kafka key for a conversation named by a header, scoped to the caller's tenant
    and user and to OpenAI's ``user`` field: the same name from two callers is two
    conversations. Hashed, so any name fits the key's alphabet and none is disclosed."""
    named = next((headers[h] for h in CONVERSATION_HEADERS if headers.get(h)), None)
    if named is None:
        return None
    scope = [principal.tenant_id, principal.user_id or "", getattr(body, "user", None) or ""]
    digest = hashlib.sha256("\n".join([*scope, named]).encode()).hexdigest()
    return f"conv-{digest[:32]}"


def to_request(
    client: LlmbusClient,
    body: Body,
    principal: Principal,
    *,
    deadline_s: float | None,
    conversation_id: str | None = None,
) -> ChatRequest:
    core: ChatCompletionRequest | CompletionRequest | EmbeddingRequest = body
    if not isinstance(body, EmbeddingRequest):
        core_type = (
            ChatCompletionRequest if isinstance(body, ChatCompletionBody) else CompletionRequest
        )
        core = core_type.model_validate(body.model_dump(exclude={"stream"}, exclude_unset=True))
    return client.wrap(
        core,
        stream=getattr(body, "stream", False),
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        deadline_s=deadline_s,
        metadata={"via": "gateway", "subject": principal.subject[:512]},
        conversation_id=conversation_id,
    )


async def complete(client: LlmbusClient, request: ChatRequest) -> dict[str, Any]:
    # An LlmbusError propagates to the app's handler, which answers in OpenAI's shape.
    async with contextlib.aclosing(client.send(request)) as replies:
        async for reply in replies:
            if isinstance(reply, ChatResult):
                return reply.completion.model_dump(mode="json", exclude_none=True)
    raise GatewayError(500, "internal_error", "no final reply")


class ChunkStream:
    """The SSE body of a streamed answer. The first reply is awaited before the HTTP
    response starts, so an error that comes first (context too long, deadline) is still
    answered with its proper status code instead of a 200 followed by an error event.

    Version-2 deltas carry the engine's own chunks, forwarded as they are; version-1
    deltas carry text, from which chunks are made here."""

    def __init__(self, client: LlmbusClient, request: ChatRequest, include_usage: bool) -> None:
        self._client = client
        self._request = request
        self._include_usage = include_usage
        self._replies = client.send(request)
        self._first: StreamDelta | ChatResult | None = None
        self._created = int(time.time())
        self._id = request.completion_id
        self._object = "chat.completion.chunk" if request.is_chat else "text_completion"
        self.finished = False

    async def open(self) -> None:
        try:
            self._first = await anext(self._replies)
        except LlmbusError as exc:
            await self._replies.aclose()
            raise from_llmbus(exc) from exc

    def _text_chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "finish_reason": finish}])

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self._id,
            "object": self._object,
            "created": self._created,
            "model": self._request.body.model,
            "choices": choices,
            **extra,
        }
        return _sse(body)

    async def events(self) -> AsyncIterator[bytes]:
        try:
            v1 = self._request.schema_version == 1
            if v1:
                yield self._text_chunk({"role": "assistant", "content": ""}, None)
            reply = self._first
            while reply is not None:
                if isinstance(reply, StreamDelta):
                    if reply.chunk is not None:
                        yield _sse({**reply.chunk, "id": self._id, "created": self._created})
                    else:
                        yield self._text_chunk({"content": reply.content}, None)
                else:
                    if v1 and not isinstance(reply.completion, EmbeddingList):
                        yield self._text_chunk({}, reply.completion.choices[0].finish_reason)
                    if self._include_usage:
                        yield self._event([], usage=reply.completion.usage.model_dump())
                    self.finished = True
                    break
                try:
                    reply = await anext(self._replies)
                except LlmbusError as exc:
                    yield _sse(from_llmbus(exc).body())
                    self.finished = True
                    break
            yield b"data: [DONE]\n\n"
        finally:
            await self._close()

    async def _close(self) -> None:
        # Shielded: this runs when the client went away and the response task is being
        # cancelled; the cancel must still reach the worker so vLLM stops generating.
        with anyio.CancelScope(shield=True):
            await self._replies.aclose()
            if not self.finished:
                with contextlib.suppress(LlmbusError):
                    await self._client.cancel(
                        self._request.request_id,
                        model=self._request.body.model,
                        reason="client disconnected",
                        conversation_id=self._request.conversation_id,
                    )


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\n\n"
