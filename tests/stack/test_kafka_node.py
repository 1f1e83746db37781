import base64
from pathlib import Path

import pytest

from llmbus.stack.kafka_node import KafkaNode, new_cluster_id
from llmbus.stack.local_stack import LocalStack
from tests.conftest import keep_server_logs


def test_cluster_ids_never_look_like_an_option() -> None:
    # 1 id in 64 would start with "-" by chance; 5000 draws make a miss of the rule
    # all but certain to show up.
    ids = [new_cluster_id() for _ in range(5000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)


@pytest.mark.integration
async def test_the_local_broker_writes_its_log(stack: LocalStack) -> None:
    # Kafka logs through slf4j 1.7; with a binding it does not know (log4j's slf4j2 one)
    # slf4j falls back to a no-op logger and the broker's warnings and errors go nowhere.
    log = stack.kafka.nodes[0].log_file.read_text()
    assert "Kafka Server started" in log


@pytest.mark.integration
async def test_server_logs_are_copied_out_before_a_purge(stack: LocalStack, tmp_path: Path) -> None:
    # What the session's stacks leave behind when a test failed (tests/conftest.py).
    kept = keep_server_logs(stack, tmp_path / "logs")
    assert sorted(p.name for p in kept) == ["kafka-node-1.log", "postgres.log"]
    assert "Kafka Server started" in (tmp_path / "logs" / "kafka-node-1.log").read_text()


def _properties(node: KafkaNode) -> dict[str, str]:
    node.home.mkdir(parents=True)
    lines = node._write_config().read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_a_node_alone_is_sized_for_a_shared_box_and_a_cluster_keeps_kafkas_defaults(
    tmp_path: Path,
) -> None:
    alone = _properties(KafkaNode(tmp_path / "a", tmp_path, port=1, controller_port=2))
    assert alone["num.io.threads"] == "2"
    assert alone["num.network.threads"] == "1"
    assert alone["metadata.max.idle.interval.ms"] == "5000"

    voters = ((1, 2), (2, 4), (3, 6))
    member = _properties(
        KafkaNode(tmp_path / "c", tmp_path, port=1, controller_port=2, voters=voters)
    )
    assert not {"num.io.threads", "num.network.threads", "metadata.max.idle.interval.ms"} & set(
        member
    )
