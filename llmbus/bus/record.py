"""Plain records handed up from the Kafka seam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to publish: where it goes and what it carries."""

    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes | None = None
    partition: int | None = None
