"""Engine-death marks in the answered log (real Kafka): what makes a request a suspect or
the culprit, and that loading a partition again does not count a death twice."""

from __future__ import annotations

import pytest

from llmbus.bus import BusProducer, Record, TopicPartition
from llmbus.consumers.answered_log import AnsweredLog, Suspicion
from tests.conftest import Bus

pytestmark = pytest.mark.integration


def request_at(bus: Bus, offset: int) -> Record:
    return Record(bus.settings.requests_topic, 0, offset, b"r", b"{}", [], 0)


async def test_two_deaths_one_alone_make_a_culprit_and_reloads_count_once(bus: Bus) -> None:
    s = bus.settings
    tp = TopicPartition(s.requests_topic, 0)
    async with BusProducer(s.kafka_bootstrap, client_id="t", max_request_bytes=1_000_000) as prod:
        writer = AnsweredLog(prod, bootstrap=s.kafka, topic=s.answered_topic, lookback_s=600)
        await writer.mark_engine_death(request_at(bus, 5), "r", in_engine=1, worker_id="w1")
        await writer.mark_engine_death(request_at(bus, 6), "beside", in_engine=3, worker_id="w1")
        await writer.mark_engine_death(request_at(bus, 2), "old", in_engine=1, worker_id="w1")

        heir = AnsweredLog(prod, bootstrap=s.kafka, topic=s.answered_topic, lookback_s=600)
        await heir.load(tp, committed=4)
        await heir.load(tp, committed=4)  # the partition came back after a rebalance
        assert heir.suspicion("r") is Suspicion.SUSPECT, "one death alone is not proof"
        assert heir.suspicion("beside") is Suspicion.SUSPECT
        assert heir.suspicion("old") is Suspicion.NONE, "below the committed offset"
        assert heir.suspicion("never") is Suspicion.NONE

        await writer.mark_engine_death(request_at(bus, 5), "r", in_engine=1, worker_id="w2")
        await heir.load(tp, committed=4)
        assert heir.suspicion("r") is Suspicion.CULPRIT
        assert heir.suspicion("beside") is Suspicion.SUSPECT
