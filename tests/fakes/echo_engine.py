"""A deterministic stand-in engine for fault tests (``llmbus worker --engine``).

It answers "echo: <last user message>" one word per step, ``step_s`` apart, so tests can
kill, stop or cancel a worker mid-generation quickly and repeatably; embeddings come one
``step_s`` after the call, a small vector per input made from its length. The real path (Kafka,
offsets, replies, audit) is unchanged; only vLLM is replaced.

Like vLLM's, its death is global: once it dies, every request in it and every later one
fails with EngineDeadError. A prompt containing ``KILLER_PROMPT`` kills it two steps in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from typing import Any

from llmbus.consumers.engine import Endpoint, EngineCall
from llmbus.errors import EngineDeadError, EngineRequestError
from llmbus.settings import Settings

KILLER_PROMPT = "KILL-THE-ENGINE"


class EchoEngine:
    def __init__(
        self, *, max_num_seqs: int = 64, step_s: float = 0.05, die_after: int | None = None
    ) -> None:
        self._die_after = die_after
        """Die (EngineDeadError) once this many requests have started: a crash of the
        engine itself, not of one request."""
        self._max_num_seqs = max_num_seqs
        self._step_s = step_s
        self._aborted: set[str] = set()
        self._dead = False
        self.seen: list[str] = []
        self.bodies: dict[str, dict[str, Any]] = {}
        """Each request's body as the engine got it (what the model saw)."""

    @property
    def max_model_len(self) -> int:
        return 2048

    @property
    def max_num_seqs(self) -> int:
        return self._max_num_seqs

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset(Endpoint)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def _die(self) -> None:
        self._dead = True
        raise EngineDeadError("stand-in engine died")

    async def serve(self, call: EngineCall) -> AsyncGenerator[dict[str, Any], None]:
        """As the ``Engine`` protocol asks: the chunks, or (``call.stream`` false) one whole
        response made of them."""
        if call.endpoint is Endpoint.EMBEDDINGS:
            yield await self._embeddings(call)
            return
        chunks = self._chunks(call)
        if call.stream:
            async for chunk in chunks:
                yield chunk
            return
        text, usage = "", None
        async for chunk in chunks:
            usage = chunk.get("usage") or usage
            for choice in chunk["choices"]:
                text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        if call.endpoint is Endpoint.CHAT:
            answer: dict[str, Any] = {"message": {"role": "assistant", "content": text}}
            kind = "chat.completion"
        else:
            answer, kind = {"text": text}, "text_completion"
        choice = {"index": 0, "finish_reason": "stop", "logprobs": None, **answer}
        yield {"id": call.request_id, "object": kind, "choices": [choice], "usage": usage}

    async def _embeddings(self, call: EngineCall) -> dict[str, Any]:
        if self._dead:
            self._die()
        self.seen.append(call.request_id)
        await asyncio.sleep(self._step_s)
        inputs = call.body["input"]
        inputs = [inputs] if isinstance(inputs, str) or isinstance(inputs[0], int) else inputs
        data = [
            {"object": "embedding", "index": i, "embedding": [1.0, float(len(text)), 0.5]}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(str(text).split()) for text in inputs)
        usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        return {"id": call.request_id, "object": "list", "created": 0, "data": data, "usage": usage}

    async def _chunks(self, call: EngineCall) -> AsyncGenerator[dict[str, Any], None]:
        """OpenAI chunks of "echo: w<len> ..." for the last message's words, one a step;
        closing the stream early counts as an abort, as in vLLM."""
        rid = call.request_id
        if self._dead:
            self._die()
        self.seen.append(rid)
        self.bodies[rid] = call.body
        if self._die_after is not None and len(self.seen) > self._die_after:
            await asyncio.sleep(self._step_s * 3)  # others are mid-generation by now
            self._die()
        body = call.body
        stop = body.get("stop") or []
        if "FAIL" in ([stop] if isinstance(stop, str) else stop):
            raise EngineRequestError("stand-in engine was told to fail this request")
        tokens = _tokens(body)
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or 10_000
        words = (["echo:"] + [f"w{n}" for n in tokens])[:limit]
        chat = call.endpoint is Endpoint.CHAT
        try:
            for i, word in enumerate(words):
                await asyncio.sleep(self._step_s)
                if self._dead or (i == 2 and -1 in tokens):
                    self._die()
                piece = ("" if i == 0 else " ") + word
                finish = "stop" if i == len(words) - 1 else None
                choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
                if chat:
                    choice["delta"] = {
                        "content": piece,
                        **({"role": "assistant"} if i == 0 else {}),
                    }
                else:
                    choice["text"] = piece
                yield {"id": rid, "object": "chunk", "choices": [choice]}
        except (asyncio.CancelledError, GeneratorExit):
            self._aborted.add(rid)
            raise
        usage = {"prompt_tokens": len(tokens), "completion_tokens": len(words)}
        yield {"id": rid, "choices": [], "usage": {**usage, "total_tokens": sum(usage.values())}}


def _tokens(body: dict[str, Any]) -> list[int]:
    if "messages" in body:
        content = body["messages"][-1].get("content") or ""
        parts = [] if isinstance(content, str) else content
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in parts)
    else:
        prompt = body["prompt"]
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    # -1 stands for the killer word, so it is seen among the token ids.
    return [-1 if w == KILLER_PROMPT else len(w) for w in text.split()] or [0]


def factory(settings: Settings) -> EchoEngine:
    """Entry point for ``llmbus worker --engine tests.fakes.echo_engine:factory``."""
    return EchoEngine(
        max_num_seqs=settings.max_num_seqs,
        step_s=float(os.environ.get("LLMBUS_TEST_STEP_S", "0.05")),
        die_after=int(os.environ["LLMBUS_TEST_DIE_AFTER"])
        if "LLMBUS_TEST_DIE_AFTER" in os.environ
        else None,
    )
