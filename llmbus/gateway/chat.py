"""``POST /v1/chat/completions``: OpenAI's request in, llmbus through Kafka, OpenAI's
``chat.completion`` (or ``chat.completion.chunk`` server-sent events) out."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from llmbus.errors import LlmbusError
from llmbus.gateway.auth import Principal
from llmbus.gateway.openai_errors import GatewayError, from_llmbus
from llmbus.producers import LlmbusClient
from llmbus.schemas import ChatCompletionRequest, ChatRequest, ChatResult, StreamDelta


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatCompletionBody(ChatCompletionRequest):
    """What the gateway accepts: the served fields plus OpenAI's transport options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = Field(default=None, max_length=256)
    """Accepted for compatibility; the audited user comes from the credential."""
    max_completion_tokens: int | None = Field(default=None, ge=1)


def to_request(
    client: LlmbusClient,
    body: ChatCompletionBody,
    principal: Principal,
    *,
    max_tokens: int,
    deadline_s: float | None,
) -> ChatRequest:
    core = body.model_dump(
        exclude={"stream", "stream_options", "n", "user", "max_completion_tokens", "messages"}
    )
    core["max_tokens"] = max_tokens
    model = core.pop("model")
    return client.build_request(
        [m.model_dump() for m in body.messages],
        model=model,
        stream=body.stream,
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        deadline_s=deadline_s,
        metadata={"via": "gateway", "subject": principal.subject[:512]},
        **core,
    )


async def complete(client: LlmbusClient, request: ChatRequest) -> dict[str, Any]:
    # An LlmbusError propagates to the app's handler, which answers in OpenAI's shape.
    async with contextlib.aclosing(client.send(request)) as replies:
        async for reply in replies:
            if isinstance(reply, ChatResult):
                return reply.completion.model_dump(mode="json")
    raise GatewayError(500, "internal_error", "no final reply")


class ChunkStream:
    """The SSE body of a streamed completion. The first reply is awaited before the HTTP
    response starts, so an error that comes first (context too long, deadline) is still
    answered with its proper status code instead of a 200 followed by an error event."""

    def __init__(self, client: LlmbusClient, request: ChatRequest, include_usage: bool) -> None:
        self._client = client
        self._request = request
        self._include_usage = include_usage
        self._replies = client.send(request)
        self._first: StreamDelta | ChatResult | None = None
        self._created = int(time.time())
        self._id = f"chatcmpl-{request.request_id}"
        self.finished = False

    async def open(self) -> None:
        try:
            self._first = await anext(self._replies)
        except LlmbusError as exc:
            await self._replies.aclose()
            raise from_llmbus(exc) from exc

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> bytes:
        return self._event([{"index": 0, "delta": delta, "finish_reason": finish}])

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._request.body.model,
            "choices": choices,
            **extra,
        }
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def events(self) -> AsyncIterator[bytes]:
        try:
            yield self._chunk({"role": "assistant", "content": ""}, None)
            reply = self._first
            while reply is not None:
                if isinstance(reply, StreamDelta):
                    yield self._chunk({"content": reply.content}, None)
                else:
                    choice = reply.completion.choices[0]
                    yield self._chunk({}, choice.finish_reason)
                    if self._include_usage:
                        yield self._event([], usage=reply.completion.usage.model_dump())
                    self.finished = True
                    break
                try:
                    reply = await anext(self._replies)
                except LlmbusError as exc:
                    error = from_llmbus(exc)
                    yield b"data: " + json.dumps(error.body()).encode() + b"\n\n"
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
                    )
