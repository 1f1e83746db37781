"""``LlmbusClient``: publish a chat, completion or embeddings request onto Kafka, await
or stream its answer."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ValidationError

from llmbus.bus import BusProducer, Kafka, PartitionReader
from llmbus.errors import (
    BrokerUnavailableError,
    InvalidRequestError,
    NotStartedError,
    RemoteError,
    RequestTimeoutError,
)
from llmbus.producers.reply_router import Reply, ReplyRouter
from llmbus.schemas import (
    CancelRequest,
    ChatCompletionRequest,
    ChatMessage,
    ChatRequest,
    ChatResult,
    CompletionRequest,
    EmbeddingRequest,
    ErrorReply,
    Priority,
    ReplyTo,
    StreamDelta,
    describe_validation_error,
    encode,
)
from llmbus.settings import Settings, requests_topic
from llmbus.tracing import TRACEPARENT, outgoing_traceparent

_ENVELOPE_ARGS = (
    "stream", "request_id", "priority", "deadline_s", "metadata", "tenant_id", "user_id",
    "reply_topic", "conversation_id",
)  # fmt: skip

_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], data: dict[str, Any]) -> _Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation_error(exc)) from None


class LlmbusClient:
    """Reads replies from one partition of the shared replies topic (no consumer group):
    a thousand clients cost a thousand partition readers, not a thousand topics."""

    def __init__(
        self,
        *,
        bootstrap: Kafka,
        topic_prefix: str,
        replies_topic: str,
        default_model: str,
        reply_partition: int | None = None,
        timeout_s: float = 300.0,
        publish_timeout_s: float = 10.0,
        max_request_bytes: int = 1_000_000,
        tenant_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._prefix = topic_prefix
        self._replies_topic = replies_topic
        self._default_model = default_model
        self._partition = reply_partition
        self._timeout_s = timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._tenant_id = tenant_id
        self._user_id = user_id
        self._client_id = f"llmbus-client-{uuid.uuid4().hex[:8]}"
        self._producer = BusProducer(
            bootstrap, client_id=self._client_id, max_request_bytes=max_request_bytes
        )
        self._router: ReplyRouter | None = None
        self._keys: dict[str, str] = {}
        """Kafka keys of this client's requests awaiting their final, for ``cancel``."""

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> LlmbusClient:
        kwargs: dict[str, Any] = {
            "bootstrap": settings.kafka,
            "topic_prefix": settings.topic_prefix,
            "replies_topic": settings.replies_topic,
            "default_model": settings.model,
            "timeout_s": settings.request_timeout_s,
            "publish_timeout_s": settings.publish_timeout_s,
            "max_request_bytes": settings.max_request_bytes,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    @property
    def reply_to(self) -> ReplyTo:
        if self._partition is None:
            raise NotStartedError("LlmbusClient used before start()")
        return ReplyTo(topic=self._replies_topic, partition=self._partition)

    async def start(self) -> None:
        await self._producer.start()
        if self._partition is None:
            partitions = await self._producer.partitions_for(self._replies_topic)
            if not partitions:
                await self._producer.stop()
                raise NotStartedError(f"replies topic {self._replies_topic} does not exist")
            self._partition = random.choice(sorted(partitions))  # noqa: S311 - load spreading
        self._router = ReplyRouter(
            PartitionReader(
                self._bootstrap,
                topic=self._replies_topic,
                partition=self._partition,
                client_id=self._client_id,
            )
        )
        try:
            await self._router.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        if self._router is not None:
            await self._router.stop()
            self._router = None
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def build_request(
        self,
        messages: Sequence[ChatMessage | dict[str, Any]] | str,
        *,
        model: str | None = None,
        **params: Any,
    ) -> ChatRequest:
        """A chat request; ``params`` are OpenAI's body fields (``tools``,
        ``response_format``, ``n``, ``logprobs``, ...) and ``wrap``'s envelope arguments
        (``stream``, ``request_id``, ``priority``, ``deadline_s``, ``metadata``,
        ``tenant_id``, ``user_id``). Raises InvalidRequestError, before anything is sent."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        envelope = {k: params.pop(k) for k in _ENVELOPE_ARGS if k in params}
        body = _validated(
            ChatCompletionRequest,
            {"model": model or self._default_model, "messages": list(messages), **params},
        )
        return self.wrap(body, **envelope)

    def wrap(
        self,
        body: ChatCompletionRequest | CompletionRequest | EmbeddingRequest,
        *,
        stream: bool = False,
        request_id: str | None = None,
        priority: Priority = Priority.NORMAL,
        deadline_s: float | None = None,
        metadata: dict[str, str] | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        reply_topic: str | None = None,
        conversation_id: str | None = None,
    ) -> ChatRequest:
        """An OpenAI body in llmbus's envelope, addressed to this client's replies, or
        with ``reply_topic`` to that topic (keyed by request id, for whichever consumer
        group reads it: send it with ``submit``). ``tenant_id``/``user_id`` override the
        client's own (a gateway serving many callers sets them per request, from the
        caller's credentials). ``conversation_id`` sends every turn of a conversation to
        the same partition, so its worker finds the earlier turns in its prefix cache."""
        now = datetime.now(UTC)
        return _validated(
            ChatRequest,
            {
                "request_id": request_id or uuid.uuid4().hex,
                "created_at": now,
                "reply_to": ReplyTo(topic=reply_topic) if reply_topic else self.reply_to,
                "priority": priority,
                "deadline": now + timedelta(seconds=deadline_s) if deadline_s else None,
                "tenant_id": tenant_id or self._tenant_id,
                "user_id": user_id or self._user_id,
                "metadata": metadata or {},
                "stream": stream,
                "conversation_id": conversation_id,
                "body": body,
            },
        )

    async def complete(
        self, prompt: str | list[str], *, model: str | None = None, **params: Any
    ) -> ChatResult:
        """A legacy text completion (``/v1/completions``); ``params`` as OpenAI's."""
        envelope = {k: params.pop(k) for k in _ENVELOPE_ARGS if k in params}
        body = _validated(
            CompletionRequest, {"model": model or self._default_model, "prompt": prompt, **params}
        )
        return await self._final(self.wrap(body, **envelope))

    async def embed(
        self,
        input: str | list[str] | list[int] | list[list[int]],
        *,
        model: str | None = None,
        **params: Any,
    ) -> ChatResult:
        """Embeddings (``/v1/embeddings``) of one input or many: the result's
        ``completion`` is OpenAI's list, one vector per input in input order. ``params``
        as OpenAI's (``encoding_format``, ``dimensions``, ``user``) and ``wrap``'s
        envelope arguments except ``stream``."""
        envelope = {k: params.pop(k) for k in _ENVELOPE_ARGS if k in params}
        body = _validated(
            EmbeddingRequest, {"model": model or self._default_model, "input": input, **params}
        )
        return await self._final(self.wrap(body, **envelope))

    async def chat(
        self, messages: Sequence[ChatMessage | dict[str, Any]] | str, **kwargs: Any
    ) -> ChatResult:
        """Send one request; return its result or raise RemoteError / RequestTimeoutError."""
        return await self._final(self.build_request(messages, stream=False, **kwargs))

    async def _final(self, request: ChatRequest) -> ChatResult:
        # aclosing: the subscription ends now, not whenever the generator is collected.
        async with contextlib.aclosing(self._exchange(request)) as replies:
            async for reply in replies:
                if isinstance(reply, ChatResult):
                    return reply
        raise AssertionError("unreachable: _exchange ends with a final")

    async def stream(
        self, messages: Sequence[ChatMessage | dict[str, Any]] | str, **kwargs: Any
    ) -> AsyncIterator[StreamDelta | ChatResult]:
        """Yield deltas as they are generated, then the final result."""
        request = self.build_request(messages, stream=True, **kwargs)
        async for reply in self._exchange(request):
            yield reply

    async def cancel(
        self,
        request_id: str,
        *,
        model: str | None = None,
        reason: str = "cancelled by the client",
        conversation_id: str | None = None,
    ) -> None:
        """Ask the worker holding ``request_id`` to stop it; its awaiting call then raises
        RemoteError with code ``cancelled``. Queued requests are skipped, running ones
        aborted in vLLM; a request that already finished is unaffected. A request of a
        conversation sent by another client needs its ``conversation_id`` (the key)."""
        value, headers = encode(CancelRequest(request_id=request_id, reason=reason))
        topic = requests_topic(self._prefix, model or self._default_model)
        # Same key as the request: same partition, so the cancel arrives after it.
        key = conversation_id or self._keys.get(request_id, request_id)
        await self._publish(topic, value, headers, key)

    async def submit(self, request: ChatRequest) -> None:
        """Publish a prepared request and return once Kafka acknowledged it, without
        awaiting its answer: for requests whose ``reply_to`` names a results topic that
        another consumer reads."""
        value, headers = encode(request)
        headers = [*headers, (TRACEPARENT, outgoing_traceparent().encode())]
        topic = requests_topic(self._prefix, request.body.model)
        await self._publish(topic, value, headers, request.kafka_key)

    async def send(self, request: ChatRequest) -> AsyncGenerator[StreamDelta | ChatResult, None]:
        """Send a prepared request (its reply_to must be this client's)."""
        async for reply in self._exchange(request):
            yield reply

    async def _exchange(
        self, request: ChatRequest
    ) -> AsyncGenerator[StreamDelta | ChatResult, None]:
        if self._router is None:
            raise NotStartedError("LlmbusClient used before start()")
        rid = request.request_id
        queue = self._router.subscribe(rid)
        self._keys[rid] = request.kafka_key
        try:
            await self.submit(request)
            timeout = self._timeout_s
            if request.deadline is not None:
                # A little past the deadline: the worker's deadline error should win.
                timeout = max(0.0, (request.deadline - datetime.now(UTC)).total_seconds()) + 5
            loop = asyncio.get_running_loop()
            give_up = loop.time() + timeout
            next_seq = 0
            while True:
                reply = await self._next(queue, give_up - loop.time(), rid)
                if isinstance(reply, ErrorReply):
                    raise RemoteError(reply.code, reply.message)
                if isinstance(reply, StreamDelta):
                    if reply.seq < next_seq:
                        continue  # a duplicate delta from a redelivered request
                    next_seq = reply.seq + 1
                yield reply
                if isinstance(reply, ChatResult):
                    return
        finally:
            self._router.unsubscribe(rid, queue)
            self._keys.pop(rid, None)

    async def _publish(
        self, topic: str, value: bytes, headers: list[tuple[str, bytes]], key: str
    ) -> None:
        """Raises BrokerUnavailableError when Kafka does not acknowledge in time. The record
        may still be delivered later; retrying with the same request id is safe (workers
        answer an id once)."""
        try:
            async with asyncio.timeout(self._publish_timeout_s):
                await self._producer.send(topic, value, headers, key=key.encode())
        except TimeoutError:
            raise BrokerUnavailableError(
                f"Kafka did not acknowledge a record keyed {key} within "
                f"{self._publish_timeout_s:.0f} s"
            ) from None

    @staticmethod
    async def _next(queue: asyncio.Queue[Reply], remaining_s: float, rid: str) -> Reply:
        # A timeout scope, not wait_for: wait_for (before Python 3.12) runs the get in a
        # task of its own, two more turns of the event loop for every reply received. A
        # reply already queued is returned without suspending, so even a spent timeout
        # takes it.
        try:
            async with asyncio.timeout(max(remaining_s, 0.0)):
                return await queue.get()
        except TimeoutError:
            raise RequestTimeoutError(f"no final reply for {rid} in time") from None
