"""A deterministic stand-in engine for fault tests (``llmbus worker --engine``).

It answers "echo: <last user message>" one word per step, ``step_s`` apart, so tests can
kill, stop or cancel a worker mid-generation quickly and repeatably. The real path (Kafka,
offsets, replies, audit) is unchanged; only vLLM is replaced.

Like vLLM's, its death is global: once it dies, every request in it and every later one
fails with EngineDeadError. A prompt containing ``KILLER_PROMPT`` kills it two steps in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence

from llmbus.consumers.engine import Chunk, GenerationParams
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

    @property
    def max_model_len(self) -> int:
        return 2048

    @property
    def max_num_seqs(self) -> int:
        return self._max_num_seqs

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = messages[-1]["content"]
        # -1 stands for the killer word, so generate() sees it in the token ids.
        return [-1 if w == KILLER_PROMPT else len(w) for w in text.split()] or [0]

    def _die(self) -> None:
        self._dead = True
        raise EngineDeadError("stand-in engine died")

    async def generate(
        self, request_id: str, prompt_token_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        if self._dead:
            self._die()
        self.seen.append(request_id)
        if self._die_after is not None and len(self.seen) > self._die_after:
            await asyncio.sleep(self._step_s * 3)  # others are mid-generation by now
            self._die()
        if params.stop and "FAIL" in params.stop:
            raise EngineRequestError("stand-in engine was told to fail this request")

        words = ["echo:"] + [f"w{n}" for n in prompt_token_ids]
        words = words[: params.max_tokens]
        for i, word in enumerate(words):
            await asyncio.sleep(self._step_s)
            if self._dead or (i == 2 and -1 in prompt_token_ids):
                self._die()
            if request_id in self._aborted:
                yield Chunk("", i, "abort")
                return
            last = i == len(words) - 1
            yield Chunk(("" if i == 0 else " ") + word, i + 1, "stop" if last else None)

    async def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)


def factory(settings: Settings) -> EchoEngine:
    """Entry point for ``llmbus worker --engine tests.fakes.echo_engine:factory``."""
    return EchoEngine(
        max_num_seqs=settings.max_num_seqs,
        step_s=float(os.environ.get("LLMBUS_TEST_STEP_S", "0.05")),
        die_after=int(os.environ["LLMBUS_TEST_DIE_AFTER"])
        if "LLMBUS_TEST_DIE_AFTER" in os.environ
        else None,
    )
