"""One node of a local Apache Kafka 4.x cluster in KRaft mode (no ZooKeeper), on loopback.

Each node is both a broker and a controller. Alone it is the single-broker dev stack;
``KafkaCluster`` (``stack/kafka_cluster.py``) runs several with one controller quorum.
The jars come from Maven Central via ``scripts/setup.sh`` into ``<cache>/kafka-<v>/libs``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from llmbus.errors import SetupError
from llmbus.stack.processes import port_open, read_pid, terminate, wait_for_port, wait_gone

KAFKA_VERSION = "4.1.1"
HOST = "127.0.0.1"

_LOG4J = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

_ONE_BOX = {
    # The single-node stack shares its machine with the worker's engine, whose two
    # compute threads stall whenever anything else takes a core. Kafka's defaults size a
    # server: 8 request handlers and 3 network threads, each waking several times a
    # second with nothing to do, and a no-op written to the metadata log every 500 ms
    # (KIP-835: it lets a cluster's brokers see that the controller is alive). Idle, with
    # nothing connected, the node took 4.5 % of a core; with these 2.8 % (2026-11-29,
    # over 60 s from 30 s after start-up). Two handlers keep up with a loopback stack's
    # traffic: a long-polling fetch waits in purgatory, not in a handler.
    "num.io.threads": "2",
    "num.network.threads": "1",
    "metadata.max.idle.interval.ms": "5000",
}


@dataclass(frozen=True)
class KafkaNode:
    state_dir: Path
    cache_dir: Path
    port: int
    controller_port: int
    scram_port: int | None = None
    """Also listen with SASL_PLAINTEXT + SCRAM-SHA-512 on this port (tests of SASL)."""
    scram_users: tuple[tuple[str, str], ...] = ()
    """(name, password) pairs created at format time for the SCRAM listener."""
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    """(node id, controller port) of every node of the cluster; empty: this node alone."""
    cluster_id: str | None = None
    """Shared by every node of a cluster (they must be formatted with the same id)."""

    @property
    def cluster_size(self) -> int:
        return max(1, len(self.voters))

    @property
    def home(self) -> Path:
        # Node 1 keeps the single-broker stack's folder, so a stack made before clusters
        # existed starts as before.
        return self.state_dir / ("kafka" if self.node_id == 1 else f"kafka-{self.node_id}")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def libs(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def _pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "server.log"

    def pid(self) -> int | None:
        return read_pid(self._pid_file)

    def is_running(self) -> bool:
        return self.pid() is not None and port_open(HOST, self.port)

    def start(self, *, wait: bool = True) -> bool:
        """Start the node unless it runs; return False if it was already running. Without
        ``wait``, return once the process is spawned (a cluster starts all its nodes
        first: none opens its listener before the quorum has a leader)."""
        if self.is_running():
            return False
        java = self.check_startable()
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            self._run_class(
                java,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self.cluster_id or new_cluster_id()}",
                f"--config={config}",
                *(
                    f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
                    for name, password in self.scram_users
                ),
            )
        with open(self.home / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                [*self._java_cmd(java), "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives `llmbus up`
            )
        self._pid_file.write_text(str(proc.pid))
        if wait:
            self.wait_listening()
        return True

    def check_startable(self) -> str:
        """Raise ``SetupError`` unless the jars, java and both ports are there to start
        this node; return the java to start it with."""
        if not any(self.libs.glob("kafka_2.13-*.jar")):
            raise SetupError(f"Kafka jars missing in {self.libs}: run `make setup`")
        if port_open(HOST, self.port) or port_open(HOST, self.controller_port):
            raise SetupError(f"port {self.port} or {self.controller_port} is taken")
        java = shutil.which("java")
        if java is None:
            raise SetupError("java not found (Kafka needs Java 17+)")
        return java

    def wait_listening(self) -> None:
        # A cold JVM on 2 cores takes ~5-10 s to open the listener, and a cluster node
        # opens it only once the controller quorum has a leader; 90 s covers slow CI.
        # The JVM's own failures (a bad flag, a missing class) reach stdout.log; Kafka's
        # (a bad setting, a taken port) reach its log4j file.
        wait_for_port(
            HOST,
            self.port,
            timeout_s=90,
            what="Kafka",
            logs=(self.home / "stdout.log", self.log_file),
        )

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        # Controlled shutdown moves leadership away and flushes logs; 60 s is ample even
        # for a cluster node handing over every partition it leads.
        terminate(pid, timeout_s=60)
        self._pid_file.unlink(missing_ok=True)
        return True

    def signal_stop(self) -> None:
        """Ask for a controlled shutdown without waiting (``stop`` waits)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def kill(self) -> bool:
        """kill -9: no controlled shutdown, as when a machine dies (fault tests)."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_gone(pid, timeout_s=10)  # the kernel frees the ports when the process is gone
        self._pid_file.unlink(missing_ok=True)
        return True

    def _java_cmd(self, java: str) -> list[str]:
        return [
            java,
            # A dev/test node needs little heap (three of them in a local cluster); keep
            # room for vLLM.
            "-Xms256m",
            "-Xmx768m",
            # Kafka's own start script's collector settings: G1's default pause goal is
            # 200 ms, and every produce and fetch waits out a pause; the log shows them.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            f'-Xlog:gc:file="{self.home / "gc.log"}":time,uptime:filecount=2,filesize=10M',
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _run_class(self, java: str, cls: str, *args: str) -> None:
        done = subprocess.run(
            [*self._java_cmd(java), cls, *args], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SetupError(f"{cls} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")

    def _write_config(self) -> Path:
        data = self.data_dir
        voters = self.voters or ((self.node_id, self.controller_port),)
        # Internal topics (offsets, transactions) replicated like llmbus's own: three
        # copies at most, and two in sync before a write counts, once there are two nodes.
        replicas = str(min(3, self.cluster_size))
        in_sync = str(min(2, self.cluster_size))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(f"{n}@{HOST}:{p}" for n, p in voters),
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "4",
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            # One node: no reason to delay the first rebalance of a new group. On a
            # cluster, Kafka's 3 s: workers started together then join one generation;
            # with no delay two of them were seen to rejoin in turn, each completing a
            # generation alone, for minutes (aiokafka 0.14, Kafka 4.1).
            "group.initial.rebalance.delay.ms": "0" if self.cluster_size == 1 else "3000",
            # A dead node is fenced (its partitions get new leaders) after this long
            # without a heartbeat. Kafka's 9 s suits real networks; on loopback 6 s keeps
            # a killed node's clients waiting less, with room for a GC pause on 2 cores.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            # Topics are created explicitly with the partition counts llmbus wants.
            "auto.create.topics.enable": "false",
            # A request may carry a long conversation; 2 MiB bounds it (see max_request_bytes).
            "message.max.bytes": str(2 * 1024 * 1024),
        }
        if self.cluster_size == 1:
            props.update(_ONE_BOX)
        if self.scram_port is not None:
            props["listeners"] += f",SASL_PLAINTEXT://{HOST}:{self.scram_port}"
            props["advertised.listeners"] += f",SASL_PLAINTEXT://{HOST}:{self.scram_port}"
            props["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            props["sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
            props["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        config = self.home / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J.format(log=self.log_file))
        os.chmod(config, 0o600)
        return config


def new_cluster_id() -> str:
    """A random Kafka cluster id (base64url of 16 bytes).

    Kafka's own generator never starts an id with "-", because the storage tool's
    argument parser would read it as an option; we follow the same rule (a random id
    began with "-" about once in 64 runs and broke `format`).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
