"""Two lanes into one engine: interactive requests are never starved by batch backlog.

Each model has an interactive request topic and a batch topic, both read by the same
worker group. Batch requests may fill the engine only up to ``max_batch`` slots: the rest
(``reserved`` slots) stays free for interactive requests, which therefore join vLLM's
running batch at its next step however long the batch backlog is. On top of that the
engine schedules by priority, so when the KV cache runs short vLLM preempts batch work
first. At its limit a lane is held: the next fetch does not take its records, which
wait where the consumer buffered them (one fetch response per partition at most; aiokafka
then fetches nothing from that broker for 100 ms, once per response, to let them be
taken). While interactive requests run, ``BatchThrottle`` may lower the batch lane's limit
further so that their tokens are not slowed by a full batch (see ``batch_throttle.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbus.bus import TopicPartition
from llmbus.consumers.batch_throttle import BatchThrottle


@dataclass(frozen=True)
class FetchPlan:
    held: set[TopicPartition]
    """Partitions whose records the next fetch must not take."""
    max_records: int
    """How many records the next fetch may return; 0 means wait for a free slot."""
    batch_limit: int
    """The batch lane's limit this plan was made with (``LaneAdmission.batch_limit``)."""


class LaneAdmission:
    def __init__(
        self,
        *,
        max_inflight: int,
        max_batch: int,
        batch_topic: str,
        throttle: BatchThrottle | None = None,
    ) -> None:
        if not 0 < max_batch <= max_inflight:
            raise ValueError(f"batch slots {max_batch} must be in 1..{max_inflight}")
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._batch_topic = batch_topic
        self._throttle = throttle
        self.interactive = 0
        self.batch = 0

    def is_batch(self, tp: TopicPartition) -> bool:
        return tp.topic == self._batch_topic

    def admit(self, tp: TopicPartition) -> None:
        if self.is_batch(tp):
            self.batch += 1
        else:
            self.interactive += 1
            self._interactive_seen()

    def release(self, tp: TopicPartition) -> None:
        if self.is_batch(tp):
            self.batch -= 1
        else:
            self.interactive -= 1
            self._interactive_seen()

    def _interactive_seen(self) -> None:
        if self._throttle is not None:
            self._throttle.interactive_seen()

    @property
    def max_batch(self) -> int:
        """Batch slots with no interactive request in sight."""
        return self._max_batch

    def batch_limit(self) -> int:
        """Batch slots now: ``max_batch``, or fewer while interactive requests run."""
        if self._throttle is None:
            return self._max_batch
        return min(self._max_batch, self._throttle.limit(self.interactive))

    def plan(self, assignment: set[TopicPartition]) -> FetchPlan:
        limit = self.batch_limit()
        free = self._max_inflight - self.interactive - self.batch
        if free <= 0:
            return FetchPlan(set(assignment), 0, limit)
        free_batch = limit - self.batch
        if free_batch <= 0:
            return FetchPlan({tp for tp in assignment if self.is_batch(tp)}, free, limit)
        # Both lanes open: fetch no more than the batch lane may still take, so one fetch
        # can never overfill it; interactive records left over come in the next fetch.
        return FetchPlan(set(), min(free, free_batch), limit)
