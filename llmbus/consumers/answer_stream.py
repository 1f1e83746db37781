"""``AnswerStream``: one request's chunks from the engine, read to the end.

For a streaming requester it times the first chunk, forwards each chunk as a
``StreamDelta`` and assembles the final object (``ChunkAssembler``); a request without
streaming is answered by the engine in one piece, normalised by the same assembler.
Embeddings come whole and are kept as they come.
Deltas are not awaited one by one: they share the final's partition and producer, so the
final's acknowledgement implies theirs.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from llmbus.bus import BusProducer
from llmbus.consumers.chunk_assembler import ChunkAssembler
from llmbus.consumers.engine import DECODE_MS_KEY, Endpoint, Engine, EngineCall
from llmbus.consumers.recent_finals import Headers
from llmbus.schemas import (
    ChatCompletion,
    ChatRequest,
    EmbeddingList,
    StreamDelta,
    TextCompletion,
    Usage,
    encode,
)

_NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


class AnswerStream:
    def __init__(
        self,
        engine: Engine,
        producer: BusProducer,
        request: ChatRequest,
        *,
        queue_ms: float,
        trace: Headers,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._request = request
        self._trace = trace
        self._assembler = ChunkAssembler(chat=request.is_chat)
        self._embeddings: dict[str, Any] | None = None
        self._start = time.monotonic()
        self.queue_ms = queue_ms
        self.completion_id = request.completion_id
        self.ttft_ms: float | None = None
        """From the request's creation to the engine's first token: the first chunk of a
        streamed request; for one answered whole, the answer less the engine's decode time
        (None where the engine does not report it)."""
        self.streamed = False
        """Whether ``ttft_ms`` was timed at a first chunk (what the latency metrics count,
        for interactive requests: a client's wait, not a batch answer's hour in a queue)."""
        self.steps = 0
        """Chunks with choices so far: one per engine step, so about the tokens generated."""

    def elapsed_ms(self) -> float:
        """From the request's creation to now."""
        return self.queue_ms + (time.monotonic() - self._start) * 1000

    def call(self, priority: int) -> EngineCall:
        request = self._request
        return EngineCall(
            request_id=request.request_id,
            endpoint=endpoint_of(request),
            body=request.body.engine_fields(),
            priority=priority,
            # Requests with tools are streamed from vLLM even when the requester does not
            # stream: its non-streamed path drops a tool call whose arguments max_tokens
            # cut short (the parser fails on the partial JSON); the streamed path keeps the
            # call and its name, as llmbus has always answered.
            stream=request.stream or bool(getattr(request.body, "tools", None)),
        )

    async def run(self, priority: int) -> None:
        """Read the engine's stream to its end. Cancelling this closes the stream, which
        aborts the request in the engine."""
        request = self._request
        call = self.call(priority)
        seq = 0
        async with contextlib.aclosing(self._engine.serve(call)) as chunks:
            async for chunk in chunks:
                if not call.endpoint.generates:
                    self._embeddings = chunk
                    continue
                if not call.stream:
                    # One whole response: nothing to forward; the engine says how long it
                    # took after its first token.
                    decode_ms = chunk.pop(DECODE_MS_KEY, None)
                    if decode_ms is not None:
                        self.ttft_ms = max(self.queue_ms, self.elapsed_ms() - decode_ms)
                    self._assembler.add_whole(chunk)
                    self.steps = self._assembler.completion_tokens()
                    continue
                if self.ttft_ms is None:
                    self.ttft_ms = self.elapsed_ms()
                    self.streamed = True
                self._assembler.add(chunk)
                if not chunk.get("choices"):
                    continue  # the usage chunk: the final carries usage
                self.steps += 1
                if request.stream and await self._forward(chunk, seq):
                    seq += 1

    async def _forward(self, chunk: dict[str, Any], seq: int) -> bool:
        request = self._request
        text = _first_choice_text(chunk)
        whole = request.schema_version >= 2
        if not (text or whole):
            return False  # version-1 requesters get text only
        delta = StreamDelta(
            schema_version=request.schema_version,
            request_id=request.request_id,
            seq=seq,
            content=text,
            chunk=(
                {**self._assembler.forwardable(chunk), "id": self.completion_id} if whole else None
            ),
        )
        value, headers = encode(delta)
        await self._producer.enqueue(
            request.reply_to.topic,
            value,
            [*headers, *self._trace],
            key=request.request_id.encode(),
            partition=request.reply_to.partition,
        )
        return True

    def usage(self) -> Usage:
        if self._embeddings is not None:
            return Usage.model_validate({**_NO_USAGE, **self._embeddings.get("usage", {})})
        return Usage.model_validate(self._assembler.usage or _NO_USAGE)

    def completion(self, model: str) -> ChatCompletion | TextCompletion | EmbeddingList:
        if self._embeddings is not None:
            return EmbeddingList.model_validate(
                {**self._embeddings, "id": self.completion_id, "model": model}
            )
        shape = ChatCompletion if self._request.is_chat else TextCompletion
        return shape.model_validate(
            {
                "id": self.completion_id,
                "created": int(time.time()),
                "model": model,
                "choices": self._assembler.choices(),
                "usage": self.usage(),
            }
        )


def endpoint_of(request: ChatRequest) -> Endpoint:
    if request.is_embedding:
        return Endpoint.EMBEDDINGS
    return Endpoint.CHAT if request.is_chat else Endpoint.COMPLETIONS


def _first_choice_text(chunk: dict[str, Any]) -> str:
    for choice in chunk.get("choices") or ():
        if choice.get("index", 0) == 0:
            text = choice.get("text")
            if text is None:
                text = (choice.get("delta") or {}).get("content")
            return text or ""
    return ""
