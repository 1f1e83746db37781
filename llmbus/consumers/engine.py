"""What the worker needs from an inference engine; vLLM's adapter implements it.

Kept free of vLLM imports so tests and tools can provide another engine (by import path).
The engine speaks OpenAI: it takes a request body of the endpoint it serves and answers
with OpenAI objects (stream chunks, or one whole response), so everything
vLLM's OpenAI server understands (tools, structured outputs, ``n``, logprobs) reaches it
unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

DECODE_MS_KEY = "llmbus_decode_ms"
"""Key of a whole response (``call.stream`` false) under which an engine may say how long
ago, in ms, it generated the answer's first token: the worker takes it out and records the
time to first token as the time to the whole answer less this. An engine that cannot tell
(several choices, say) leaves it out, and the time to first token stays unknown."""


class Endpoint(StrEnum):
    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"
    EMBEDDINGS = "/v1/embeddings"

    @property
    def generates(self) -> bool:
        return self is not Endpoint.EMBEDDINGS


@dataclass(frozen=True, slots=True)
class EngineCall:
    request_id: str
    endpoint: Endpoint
    body: dict[str, Any]
    """The OpenAI request body, as the endpoint's clients send it (no stream fields)."""
    priority: int = 2
    """Lower runs first (vLLM's priority scheduling); 2 is a normal request's
    (``request_processor._ENGINE_PRIORITY``)."""
    stream: bool = True
    """Whether the caller wants chunks as they come. Without, the engine answers with one
    whole response (a ``chat.completion`` / ``text_completion`` / embeddings ``list``
    object with ``usage``) at the end, which spares the per-token work of building,
    encoding and reading chunks. Embeddings are never streamed."""


class Engine(Protocol):
    @property
    def max_model_len(self) -> int: ...

    @property
    def max_num_seqs(self) -> int: ...

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        """What the loaded model serves: chat and completions (a generating model) or
        embeddings (a pooling model). Known after ``start()``."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def serve(self, call: EngineCall) -> AsyncGenerator[dict[str, Any], None]:
        """Stream the answer as OpenAI chunks; the last one carries ``usage`` and no
        choices. When ``call.stream`` is false the engine instead yields exactly one
        whole response carrying ``usage`` (and, where known, ``DECODE_MS_KEY``). Closing
        the iterator early aborts the request in the engine.

        Raises InvalidRequestError or ContextLengthExceededError (the engine refused this
        request), EngineRequestError (this request failed) or EngineDeadError (the engine
        is gone)."""
        ...
