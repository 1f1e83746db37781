"""Who is in the engine, and a way to run one request alone in it.

When the engine dies, every request in it at that moment is a suspect: any of them may
have killed it (a prompt that trips a kernel bug), or none (out of memory, a driver
fault). The worker records the suspects in the answered log before it exits; the next
owner of their partition runs each suspect *alone*, so that if the engine dies again the
death names its culprit, which is then answered with an error and dead-lettered instead of
killing every worker that takes it (see ``docs/guarantees.md``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from llmbus.bus import Record
from llmbus.errors import EngineDeadError


class EngineGate:
    def __init__(self) -> None:
        self._inside: dict[str, Record] = {}
        self._alone_inside = False
        self._alone_waiting = 0
        self._changed = asyncio.Event()
        self.died_with: dict[str, Record] | None = None
        """The requests that were in the engine when it first died, by request id."""

    @asynccontextmanager
    async def enter(
        self, request_id: str, record: Record, *, alone: bool, stop: asyncio.Event
    ) -> AsyncIterator[None]:
        """Hold a place in the engine while generating. ``alone`` waits until nothing
        else is in it and keeps others out meanwhile. Returns without entering (the
        caller checks ``stop``) if ``stop`` is set while waiting."""
        if alone:
            self._alone_waiting += 1
            try:
                await self._wait(lambda: not self._inside, stop)
            finally:
                self._alone_waiting -= 1
                self._notify()
        else:
            # Waiting suspects go first, or a full pipeline would starve them forever.
            await self._wait(lambda: not self._alone_inside and not self._alone_waiting, stop)
        if stop.is_set():
            yield
            return
        self._inside[request_id] = record
        self._alone_inside = alone
        try:
            yield
        except EngineDeadError:
            if self.died_with is None:
                self.died_with = dict(self._inside)
            raise
        finally:
            del self._inside[request_id]
            if alone:
                self._alone_inside = False
            self._notify()

    @property
    def occupancy(self) -> int:
        return len(self._inside)

    async def _wait(self, ready: Callable[[], bool], stop: asyncio.Event) -> None:
        while not ready() and not stop.is_set():
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            stopped = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({changed, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                stopped.cancel()

    def _notify(self) -> None:
        self._changed.set()
