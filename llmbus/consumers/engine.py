"""What the worker needs from an inference engine; vLLM's adapter implements it.

Kept free of vLLM imports so tests and tools can provide another engine (by import path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    priority: int = 1
    """Lower runs first (vLLM's priority scheduling)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """New text since the previous chunk; ``finish_reason`` is set on the last one."""

    text: str
    completion_tokens: int
    """Tokens generated so far for this request."""
    finish_reason: str | None


class Engine(Protocol):
    @property
    def max_model_len(self) -> int: ...

    @property
    def max_num_seqs(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Apply the model's chat template and tokenize."""
        ...

    def generate(
        self, request_id: str, prompt_token_ids: list[int], params: GenerationParams
    ) -> AsyncIterator[Chunk]:
        """Stream the completion. Raises EngineRequestError (this request failed) or
        EngineDeadError (the engine is gone)."""
        ...

    async def abort(self, request_id: str) -> None: ...
