"""Which offsets are safe to commit when requests finish out of order."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmbus.bus import TopicPartition


@dataclass
class _PartitionState:
    pending: set[int] = field(default_factory=set)
    next_offset: int = 0
    """One past the highest offset tracked so far."""
    committed: int = -1


class OffsetTracker:
    """Tracks handed-out and finished offsets per partition.

    A partition's committable offset is its lowest unfinished offset (or one past the
    highest tracked, when none is unfinished): committing it can never skip a request
    that has not been answered, whatever order requests finish in.
    """

    def __init__(self) -> None:
        self._parts: dict[TopicPartition, _PartitionState] = {}

    def track(self, tp: TopicPartition, offset: int) -> None:
        state = self._parts.setdefault(tp, _PartitionState())
        state.pending.add(offset)
        state.next_offset = max(state.next_offset, offset + 1)

    def finish(self, tp: TopicPartition, offset: int) -> None:
        state = self._parts.get(tp)
        if state is not None:  # a revoked partition's late finishers are ignored
            state.pending.discard(offset)

    def pending_count(self) -> int:
        return sum(len(s.pending) for s in self._parts.values())

    def committable(self, tps: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets (next to read) that advanced since the last ``mark_committed``."""
        out = {}
        for tp, state in self._parts.items():
            if tps is not None and tp not in tps:
                continue
            offset = min(state.pending) if state.pending else state.next_offset
            if offset > state.committed and state.next_offset > 0:
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            state = self._parts.get(tp)
            if state is not None:
                state.committed = max(state.committed, offset)

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)
