"""The local Kafka: one KRaft node (the demo's default) or a cluster of several on
loopback, each node a broker and a controller, with one controller quorum.

``llmbus up --brokers 3`` starts three. Node ``i`` (from 1) listens on ``kafka_port +
2·(i-1)`` for clients and ``kafka_controller_port + 2·(i-1)`` for the quorum, unless ports
are given.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmbus.errors import SetupError
from llmbus.stack.kafka_node import KafkaNode, new_cluster_id


@dataclass(frozen=True)
class KafkaCluster:
    nodes: tuple[KafkaNode, ...]

    @classmethod
    def local(
        cls, state_dir: Path, cache_dir: Path, ports: Sequence[tuple[int, int]]
    ) -> KafkaCluster:
        """Nodes 1..len(ports) with (client port, controller port) each, sharing one
        cluster id (that of the nodes already formatted, if any)."""
        every = [port for pair in ports for port in pair]
        if len(set(every)) != len(every):
            raise SetupError(f"Kafka nodes would share ports: {list(ports)}")
        voters = tuple((i, controller) for i, (_, controller) in enumerate(ports, start=1))
        first = KafkaNode(state_dir, cache_dir, ports[0][0], ports[0][1])
        cluster_id = _formatted_cluster_id(first.data_dir) or new_cluster_id()
        return cls(
            tuple(
                KafkaNode(
                    state_dir,
                    cache_dir,
                    port,
                    controller,
                    node_id=i,
                    voters=voters if len(ports) > 1 else (),
                    cluster_id=cluster_id,
                )
                for i, (port, controller) in enumerate(ports, start=1)
            )
        )

    @property
    def libs(self) -> Path:
        """Kafka's jars (its command-line tools run from them too)."""
        return self.nodes[0].libs

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no Kafka node {node_id} in this cluster")

    def start(self) -> bool:
        """Start the nodes not running; False if all were running already."""
        self._check_formatted_size()
        # Every node checked before any starts: a node started alone would wait for a
        # quorum that never comes, with its data already formatted.
        for node in self.nodes:
            if not node.is_running():
                node.check_startable()
        started = [node.start(wait=False) for node in self.nodes]
        for node in self.nodes:
            node.wait_listening()
        return any(started)

    def stop(self) -> bool:
        """Stop every node, all at once: one by one, the last nodes would wait for a
        controller quorum that is already gone before they could shut down cleanly."""
        running = [node for node in self.nodes if node.pid() is not None]
        if not running:
            return False
        for node in running:
            node.signal_stop()
        for node in running:
            node.stop()
        return True

    def purge(self) -> None:
        for node in self.nodes:
            shutil.rmtree(node.home, ignore_errors=True)

    def active_controller(self) -> int | None:
        """The node id leading the controller quorum, from the quorum state each node
        keeps on disk (the newest epoch wins); None before an election."""
        best: tuple[int, int] | None = None
        for node in self.nodes:
            state = node.data_dir / "__cluster_metadata-0" / "quorum-state"
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(state.read_text())
                leader, epoch = int(data.get("leaderId", -1)), int(data.get("leaderEpoch", -1))
                if leader > 0 and (best is None or epoch > best[1]):
                    best = (leader, epoch)
        return best[0] if best else None

    def _check_formatted_size(self) -> None:
        on_disk = formatted_nodes(self.nodes[0].state_dir)
        if on_disk and on_disk != len(self.nodes):
            raise SetupError(
                f"the Kafka in {self.nodes[0].state_dir} was made with {on_disk} node(s), "
                f"not {len(self.nodes)}: pass --brokers {on_disk}, or `llmbus down --purge` "
                "first (which deletes its topics)"
            )


def formatted_nodes(state_dir: Path) -> int:
    """How many local Kafka nodes have been formatted in ``state_dir`` (0: none yet)."""
    homes = [state_dir / "kafka", *state_dir.glob("kafka-*")]
    return sum(1 for home in homes if (home / "data" / "meta.properties").exists())


def _formatted_cluster_id(data_dir: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in (data_dir / "meta.properties").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id":
                return value.strip()
    return None
