"""``TopicBalancedStickyAssignor``: partitions stay with their consumer across rebalances,
balanced topic by topic.

A worker reads two topics (the interactive and the batch lane). Keeping a partition
where it was keeps its conversations with the engine that has their earlier turns in its
prefix cache; balancing each topic on its own keeps every worker serving both lanes
(aiokafka's sticky assignor balances the total and may give one worker all of one lane).
Each member tells the leader what it held (its ``user_data``); the leader lets it keep up
to its fair share of each topic and deals out the rest to whoever has least.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

_VERSION = 0


class TopicBalancedStickyAssignor:
    """One instance per consumer: it remembers that consumer's last assignment."""

    name = "llmbus-sticky"
    version = _VERSION

    def __init__(self) -> None:
        self._held: dict[str, list[int]] = {}

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(
            _VERSION, sorted(topics), json.dumps(self._held, sort_keys=True).encode()
        )

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        self._held = {topic: list(parts) for topic, parts in assignment.assignment}

    def on_generation_assigned(self, generation: int) -> None:
        return None

    def assign(
        self, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        held = {member: _held(meta.user_data) for member, meta in members.items()}
        result: dict[str, dict[str, list[int]]] = defaultdict(dict)
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        for topic in topics:
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            readers = sorted(m for m, meta in members.items() if topic in meta.subscription)
            for member, parts in _deal(partitions, readers, held, topic).items():
                result[member][topic] = parts
        return {
            member: ConsumerProtocolMemberAssignment(_VERSION, sorted(result[member].items()), b"")
            for member in members
        }


def _held(user_data: bytes | None) -> dict[str, list[int]]:
    try:
        data = json.loads(user_data or b"{}")
        return {str(t): [int(p) for p in parts] for t, parts in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}  # another assignor's data, or none: this member held nothing


def _deal(
    partitions: list[int],
    readers: list[str],
    held: Mapping[str, Mapping[str, list[int]]],
    topic: str,
) -> dict[str, list[int]]:
    """Each reader keeps what it held up to its share; the rest go to the least loaded."""
    if not readers:
        return {}
    base, extra = divmod(len(partitions), len(readers))
    dealt: dict[str, list[int]] = {r: [] for r in readers}
    free = set(partitions)
    # Members that held more go first, so the extra partitions stay where they were.
    for reader in sorted(readers, key=lambda r: (-len(held[r].get(topic, ())), r)):
        share = base + (1 if extra > 0 else 0)
        for partition in held[reader].get(topic, ()):
            if partition in free and len(dealt[reader]) < share:
                dealt[reader].append(partition)
                free.discard(partition)
        if len(dealt[reader]) > base:
            extra -= 1
    for partition in sorted(free):
        reader = min(readers, key=lambda r: (len(dealt[r]), r))
        dealt[reader].append(partition)
    return {r: sorted(parts) for r, parts in dealt.items()}
