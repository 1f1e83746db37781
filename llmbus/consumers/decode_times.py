"""``DecodeTimes``: how long vLLM generated after each request's first token.

A request answered whole (not streamed) has no first chunk for the worker to time; vLLM's
stat loggers see each finished request's decode time, keyed by the id its serving layer
gave it. The adapter expects an id before the call and takes the time after the answer,
so the audit trail keeps a time to first token for batch and replay requests too.
"""

from __future__ import annotations

import asyncio

WAIT_S = 0.05
"""How long an answer waits for its time: vLLM records stats in the same pass of its
output loop that hands out the finished answer, so the time is almost always there
already; the wait only covers a pass that first awaits an abort (stop strings)."""


class DecodeTimes:
    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[float]] = {}

    def expect(self, engine_id: str) -> None:
        self._pending[engine_id] = asyncio.get_running_loop().create_future()

    def finished(self, engine_id: str, decode_s: float) -> None:
        """Called by the stat logger, in the engine's event loop, for every finished
        request; ids nobody expects (streamed requests, other callers) are ignored."""
        future = self._pending.get(engine_id)
        if future is not None and not future.done():
            future.set_result(decode_s * 1000)

    async def take_ms(self, engine_id: str) -> float | None:
        """The request's decode time in ms, or None when vLLM did not report it."""
        future = self._pending.get(engine_id)
        if future is None:
            return None
        try:
            if future.done():  # the usual case: no timer, no task
                return future.result()
            # Kept in _pending while waiting: finished() finds it there.
            return await asyncio.wait_for(asyncio.shield(future), WAIT_S)
        except TimeoutError:
            return None
        finally:
            self.discard(engine_id)

    def discard(self, engine_id: str) -> None:
        """Forget a request that failed or was cancelled (no answer will take its time)."""
        future = self._pending.pop(engine_id, None)
        if future is not None:
            future.cancel()
