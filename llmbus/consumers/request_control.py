"""How a worker stops one in-flight request: cancelled by its client, or handed back
because its partition moved to another worker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from llmbus.bus import TopicPartition
from llmbus.errors import HandedBackError, RequestCancelledError


@dataclass
class RequestControl:
    tp: TopicPartition
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    handed_back: bool = False
    task: asyncio.Task[None] | None = None
    batch_id: str | None = None
    reason: str = "cancelled by the client"

    def cancel(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        self.stop.set()

    def hand_back(self) -> None:
        self.handed_back = True
        self.stop.set()

    def raise_if_stopped(self, when: str) -> None:
        if not self.stop.is_set():
            return
        if self.handed_back:
            raise HandedBackError(f"partition {self.tp} revoked {when}")
        raise RequestCancelledError(f"{self.reason} {when}")
