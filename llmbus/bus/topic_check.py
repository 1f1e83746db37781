"""``TopicWatch``: do llmbus's topics look as the settings say, and do they stay healthy?

At start-up it compares each topic's partitions, replicas, ``min.insync.replicas`` and
in-sync replicas with the settings, and warns or refuses (``topic_check``). Then, every
minute, it exports under-replicated and offline partitions as gauges and logs each
change, so an operator sees a broker's loss without a Kafka exporter.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Self

from llmbus.background import cancel_and_wait
from llmbus.bus.admin import ClusterState, describe_topics
from llmbus.bus.endpoint import Kafka
from llmbus.errors import BrokerUnavailableError, TopicLayoutError
from llmbus.metrics import TopicMetrics
from llmbus.settings import TopicLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicProblem:
    topic: str
    what: str
    lasting: bool = True
    """A layout problem (partitions, replicas, min.insync) that stays until an operator
    mends it; False for health (a broker away, a refused look) that passes by itself."""

    def __str__(self) -> str:
        return f"{self.topic}: {self.what}"


def find_problems(
    expected: dict[str, int], state: ClusterState, layout: TopicLayout
) -> list[TopicProblem]:
    """Every way the named topics fall short of ``expected`` partitions and ``layout``."""
    replicas = layout.replicas(len(state.brokers))
    problems = []
    for name, partitions in expected.items():
        topic = state.topics.get(name)
        if name in state.errors:
            what = f"cannot be described (Kafka error {state.errors[name]}: an ACL?)"
            problems.append(TopicProblem(name, what, lasting=False))
            continue
        if topic is None:
            problems.append(TopicProblem(name, "does not exist"))
            continue
        if len(topic.partitions) < partitions:
            problems.append(TopicProblem(name, (
                f"{len(topic.partitions)} partitions, settings expect {partitions} "
                "(LLMBUS_REQUEST_PARTITIONS, LLMBUS_REPLY_PARTITIONS)"
            )))  # fmt: skip
        if topic.replicas < replicas:
            problems.append(TopicProblem(name, (
                f"replication factor {topic.replicas}, settings expect {replicas} "
                "(a broker's loss can lose acknowledged records or stop the topic)"
            )))  # fmt: skip
        # Judged against the replicas the topic has: too few of those is said above.
        in_sync = layout.in_sync(min(topic.replicas, replicas))
        if topic.min_insync_replicas is not None and topic.min_insync_replicas < in_sync:
            problems.append(TopicProblem(name, (
                f"min.insync.replicas {topic.min_insync_replicas}, settings expect {in_sync} "
                "(an acknowledged record may be on fewer brokers than planned)"
            )))  # fmt: skip
        if offline := [p.partition for p in topic.partitions if p.offline]:
            what = f"partitions {offline} have no leader"
            problems.append(TopicProblem(name, what, lasting=False))
        if under := [p.partition for p in topic.partitions if p.under_replicated]:
            what = f"partitions {under} are under-replicated"
            problems.append(TopicProblem(name, what, lasting=False))
    return problems


class TopicWatch:
    def __init__(
        self,
        kafka: Kafka,
        expected: dict[str, int],
        layout: TopicLayout,
        metrics: TopicMetrics | None = None,
        *,
        interval_s: float = 60.0,
    ) -> None:
        """``interval_s``: between health checks after start-up. A minute tells an
        operator of a lost replica well within an alert's ``for:`` window, at the cost of
        one metadata request per process per minute."""
        self._kafka = kafka
        self._expected = expected
        self._layout = layout
        self._metrics = metrics
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._last: set[TopicProblem] = set()

    async def start(self) -> None:
        """Check once; warn about each problem. With the layout's "refuse", raise
        ``TopicLayoutError`` naming the lasting ones (too few partitions or replicas):
        health problems (a broker away during a rolling restart) only warn, or every
        process restarted meanwhile would refuse to start while Kafka still works."""
        try:
            problems = await self.check()
        except BrokerUnavailableError as exc:
            if self._layout.check == "refuse":
                raise
            log.warning("topic check: cannot describe topics: %s", exc)
            problems = []
        if (lasting := [p for p in problems if p.lasting]) and self._layout.check == "refuse":
            raise TopicLayoutError(
                "topics do not match the settings (LLMBUS_TOPIC_CHECK=refuse): "
                + "; ".join(map(str, lasting))
            )
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def check(self) -> list[TopicProblem]:
        """Look once: log problems that are new or gone since the last look, update the
        gauges, and return the problems."""
        state = await describe_topics(self._kafka, list(self._expected))
        problems = find_problems(self._expected, state, self._layout)
        for problem in sorted(set(problems) - self._last, key=str):
            log.warning("topic check: %s", problem)
        for problem in sorted(self._last - set(problems), key=str):
            log.info("topic check: mended: %s", problem)
        self._last = set(problems)
        if self._metrics is not None:
            for name, topic in state.topics.items():
                parts = topic.partitions
                under = sum(p.under_replicated for p in parts)
                self._metrics.under_replicated.labels(topic=name).set(under)
                self._metrics.offline.labels(topic=name).set(sum(p.offline for p in parts))
        return problems

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except BrokerUnavailableError as exc:
                # The worker's own consumer reports a broker that is away; here it only
                # means this minute's gauges are not updated.
                log.warning("topic check: cannot describe topics: %s", exc)
            except Exception:
                # A watch that dies would freeze the gauges and re-raise at stop(), hiding
                # the process's own exit code: say it, and look again next minute.
                log.exception("topic check failed")
