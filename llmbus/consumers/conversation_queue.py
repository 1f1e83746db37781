"""``ConversationQueue``: at most a few requests of one conversation run at once.

Requests keyed by conversation share a partition, and a worker runs a partition's
records concurrently, out of order. Without a bound, one conversation that sends many
requests at once (an agent fanning out) would take every engine slot of the worker while
the other conversations of its partitions wait behind it. Requests of a key over its limit
wait here, in arrival order, holding no engine slot, and start as that key's earlier ones
finish; meanwhile the worker keeps fetching and serving other keys. The queue is bounded:
when ``max_waiting`` records wait, the worker stops fetching until one starts (the worst
case for the others: a single key with more than ``max_waiting`` records queued in Kafka
ahead of theirs; see docs/architecture.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class ConversationQueue(Generic[Item]):
    def __init__(self, *, per_key: int, max_waiting: int) -> None:
        self._per_key = max(1, per_key)
        self._max_waiting = max(1, max_waiting)
        self._running: dict[bytes, int] = {}
        self._waiting: dict[bytes, deque[Item]] = {}
        self._count = 0

    @property
    def waiting(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count >= self._max_waiting

    def admit(self, key: bytes | None, item: Item) -> bool:
        """True: run ``item`` now (it counts as running); False: it waits here."""
        if key is None:
            return True
        if self._running.get(key, 0) < self._per_key:
            self._running[key] = self._running.get(key, 0) + 1
            return True
        self._waiting.setdefault(key, deque()).append(item)
        self._count += 1
        return False

    def release(self, key: bytes | None) -> Item | None:
        """One of ``key``'s running items finished: its next waiting item, now running."""
        if key is None or key not in self._running:
            return None
        queue = self._waiting.get(key)
        if queue:
            self._count -= 1
            item = queue.popleft()
            if not queue:
                del self._waiting[key]
            return item
        self._running[key] -= 1
        if not self._running[key]:
            del self._running[key]
        return None

    def drop(self, unwanted: Callable[[Item], bool]) -> list[Item]:
        """Remove and return the waiting items ``unwanted`` picks (revoked partitions)."""
        dropped: list[Item] = []
        for key in list(self._waiting):
            keep: deque[Item] = deque()
            for item in self._waiting[key]:
                (dropped if unwanted(item) else keep).append(item)
            if keep:
                self._waiting[key] = keep
            else:
                del self._waiting[key]
        self._count -= len(dropped)
        return dropped
