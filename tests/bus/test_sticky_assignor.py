"""TopicBalancedStickyAssignor: balanced per topic, sticky across membership changes."""

from __future__ import annotations

from typing import Any

from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from llmbus.bus.sticky_assignor import TopicBalancedStickyAssignor

TOPICS = {"requests": 4, "batch": 4}


class Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(TOPICS[topic]))


def rebalance(members: dict[str, TopicBalancedStickyAssignor]) -> dict[str, dict[str, list[int]]]:
    """One rebalance as aiokafka runs it: metadata from each, assign, on_assignment to each."""
    metadata = {m: a.metadata(TOPICS) for m, a in members.items()}
    leader = next(iter(members.values()))
    assignments = leader.assign(Cluster(), metadata)  # type: ignore[arg-type]
    for member, assignor in members.items():
        assignor.on_assignment(assignments[member])
    return {m: dict(a.assignment) for m, a in assignments.items()}


def owners(result: dict[str, dict[str, list[int]]]) -> dict[tuple[str, int], str]:
    return {(t, p): m for m, topics in result.items() for t, ps in topics.items() for p in ps}


def test_each_topic_is_balanced_and_a_newcomer_takes_only_its_share() -> None:
    members = {"a": TopicBalancedStickyAssignor(), "b": TopicBalancedStickyAssignor()}
    two = rebalance(members)
    assert all(len(two[m][t]) == 2 for m in two for t in TOPICS)
    members["c"] = TopicBalancedStickyAssignor()
    three = rebalance(members)
    moved = {tp for tp, m in owners(three).items() if owners(two).get(tp) != m}
    assert len(owners(three)) == 8
    assert all(owners(three)[tp] == "c" for tp in moved), "only the newcomer gains"
    assert len(moved) == 2  # one per topic: 4 partitions over 3 members is 2/1/1
    for topic in TOPICS:
        assert sorted(len(three[m].get(topic, [])) for m in three) == [1, 1, 2]


def test_a_leaver_s_partitions_go_to_the_others_and_stale_claims_lose() -> None:
    members = {m: TopicBalancedStickyAssignor() for m in "abc"}
    before = owners(rebalance(members))
    del members["b"]
    after = owners(rebalance(members))
    assert all(after[tp] == m for tp, m in before.items() if m != "b"), "nobody else moves"
    assert set(after.values()) == {"a", "c"} and len(after) == 8
    # A member whose user data claims partitions another holds (stale, or garbage) is dealt
    # only what is free.
    stale = TopicBalancedStickyAssignor()
    stale.on_assignment(_claim_all())
    members = {"d": stale, **members}  # first in line, and claiming everything
    result = rebalance(members)
    assert len(owners(result)) == 8
    for topic in TOPICS:  # still balanced: the claim got it no more than its share
        assert sorted(len(result[m].get(topic, [])) for m in result) == [1, 1, 2]
    meta: Any = ConsumerProtocolMemberMetadata(0, ["requests"], b"not json")
    alone = TopicBalancedStickyAssignor().assign(Cluster(), {"x": meta})  # type: ignore[arg-type]
    assert dict(alone["x"].assignment) == {"requests": [0, 1, 2, 3]}


def _claim_all() -> Any:

    return ConsumerProtocolMemberAssignment(
        0, [(t, list(range(n))) for t, n in TOPICS.items()], b""
    )
