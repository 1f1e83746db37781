"""The local Kafka cluster: node layout, the count a state folder was made with, the
active controller; and, on the session's three-node cluster, what ``up`` made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmbus.errors import SetupError
from llmbus.settings import Settings
from llmbus.stack.kafka_cluster import KafkaCluster, formatted_nodes
from llmbus.stack.local_stack import LocalStack


def made_with(state: Path, nodes: int, cluster_id: str = "abc") -> None:
    for i in range(1, nodes + 1):
        data = state / ("kafka" if i == 1 else f"kafka-{i}") / "data"
        data.mkdir(parents=True)
        (data / "meta.properties").write_text(f"cluster.id={cluster_id}\nnode.id={i}\n")


def test_nodes_take_consecutive_port_pairs_and_one_quorum(tmp_path: Path) -> None:
    stack = LocalStack(
        Settings(state_dir=tmp_path, kafka_port=30000, kafka_controller_port=30001), brokers=3
    )
    nodes = stack.kafka.nodes
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [
        (1, 30000, 30001), (2, 30002, 30003), (3, 30004, 30005),
    ]  # fmt: skip
    assert all(n.voters == ((1, 30001), (2, 30003), (3, 30005)) for n in nodes)
    assert len({n.cluster_id for n in nodes}) == 1
    assert stack.kafka.bootstrap == "127.0.0.1:30000,127.0.0.1:30002,127.0.0.1:30004"
    assert [n.home.name for n in nodes] == ["kafka", "kafka-2", "kafka-3"]


def test_a_state_folder_keeps_its_node_count_and_cluster_id(tmp_path: Path) -> None:
    made_with(tmp_path, 3, cluster_id="kept")
    assert formatted_nodes(tmp_path) == 3
    # `down` (no --brokers) finds all three; the id is the one they were formatted with.
    stack = LocalStack(Settings(state_dir=tmp_path))
    assert len(stack.kafka.nodes) == 3
    assert {n.cluster_id for n in stack.kafka.nodes} == {"kept"}
    with pytest.raises(SetupError, match="made with 3 node"):
        LocalStack(Settings(state_dir=tmp_path), brokers=1).kafka.start()


def test_the_active_controller_is_the_newest_epochs_leader(tmp_path: Path) -> None:
    cluster = KafkaCluster.local(tmp_path, tmp_path, [(1, 2), (3, 4), (5, 6)])
    assert cluster.active_controller() is None
    for node, (leader, epoch) in zip(cluster.nodes, [(1, 3), (2, 5), (-1, 6)], strict=True):
        folder = node.data_dir / "__cluster_metadata-0"
        folder.mkdir(parents=True)
        (folder / "quorum-state").write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch}))
    assert cluster.active_controller() == 2


@pytest.mark.integration
@pytest.mark.cluster
async def test_up_with_three_brokers_makes_a_cluster(cluster_stack: LocalStack) -> None:
    cluster = cluster_stack.kafka
    assert len(cluster.nodes) == 3
    assert all(node.is_running() for node in cluster.nodes)
    assert cluster.active_controller() in {1, 2, 3}
    assert cluster_stack.env()["LLMBUS_KAFKA_BOOTSTRAP"] == cluster.bootstrap
    assert cluster.bootstrap.count(",") == 2
