"""Session-scoped real services: Kafka (KRaft), PostgreSQL and vLLM, started once.

Each service has a factory and a default. Every test gets fresh topics (its own topic
prefix) and fresh consumer groups, on the shared broker, database and engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmbus import logs
from llmbus.bus import ensure_topics
from llmbus.consumers.auditor import Auditor, AuditorConfig
from llmbus.consumers.batch_throttle import StepCostModel
from llmbus.consumers.engine import Engine
from llmbus.consumers.worker import Worker, WorkerConfig
from llmbus.metrics import AuditMetrics, WorkerMetrics
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack
from llmbus.stack.model_cache import DEFAULT_EMBEDDING_MODEL
from llmbus.stack.processes import free_port
from llmbus.store.audit_rows import RowPolicy
from llmbus.store.audit_writer import AuditWriter
from tests.browser import HeadlessChromium

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
logs.install_record_fields()  # as the CLI does: request fields on every log record


# --- Kafka + PostgreSQL ---------------------------------------------------------------

StackFactory = Callable[..., Awaitable[LocalStack]]


def keep_server_logs(stack: LocalStack, into: Path) -> list[Path]:
    """Copy the stack's Kafka and PostgreSQL server logs into ``into`` (under pytest's base
    temporary directory, which pytest keeps for its last three runs) before the stack's
    data is purged: a failure that shows only in a full run, such as a fresh partition
    left without a leader, is then read in the broker's log instead of lost with it."""
    sources = [
        *((f"kafka-node-{i}.log", node.log_file) for i, node in enumerate(stack.kafka.nodes, 1)),
        ("postgres.log", stack.postgres.log_file),
    ]
    kept: list[Path] = []
    into.mkdir(parents=True, exist_ok=True)
    for name, source in sources:
        if source.exists():
            kept.append(Path(shutil.copy(source, into / name)))
    return kept


@pytest.fixture(scope="session")
async def stack_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[StackFactory]:
    stacks: list[LocalStack] = []

    async def make(brokers: int = 1) -> LocalStack:
        ports = [(free_port(), free_port()) for _ in range(brokers)]
        settings = Settings(
            state_dir=tmp_path_factory.mktemp("stack"),
            kafka_port=ports[0][0],  # node 1's, as `llmbus up` would be told
            kafka_controller_port=ports[0][1],
            postgres_port=free_port(),
        )
        stack = LocalStack(settings, fast_unsafe=True, kafka_ports=ports)
        stacks.append(stack)
        await stack.up()
        return stack

    yield make
    failed = request.session.testsfailed > 0
    for n, stack in enumerate(stacks, 1):
        if failed:
            into = tmp_path_factory.getbasetemp() / "server-logs" / f"stack-{n}"
            kept = keep_server_logs(stack, into)
            terminal = request.config.pluginmanager.get_plugin("terminalreporter")
            if kept and terminal is not None:
                terminal.write_line(f"tests failed: {len(kept)} server logs kept in {into}")
        stack.down(purge=True)


@pytest.fixture(scope="session")
async def stack(stack_factory: StackFactory) -> LocalStack:
    return await stack_factory()


@pytest.fixture(scope="session")
async def cluster_stack(stack_factory: StackFactory) -> LocalStack:
    """A stack whose Kafka is a three-node KRaft cluster (topics with three replicas, two
    in sync), for tests of broker faults; each test leaves every node running."""
    return await stack_factory(brokers=3)


@pytest.fixture(scope="session")
async def analyst_db(stack: LocalStack) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(stack.postgres.url("llmbus_reader"))
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def helm() -> str:
    """helm from PATH, or built once from the Go module proxy by scripts/helm.sh."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "helm.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


# --- vLLM ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def step_costs() -> StepCostModel:
    """The session engine's step timings, as a worker's batch throttle reads them."""
    return StepCostModel()


@pytest.fixture(scope="session")
async def engine(step_costs: StepCostModel) -> AsyncIterator[Engine]:
    """The real vLLM engine on the default model, loaded once for the whole session."""
    from llmbus.cli import make_engine

    # float32 as on a fresh machine: "auto" would pick bfloat16 where a precision verdict
    # from `llmbus precision-check` is cached, and answers would differ between machines.
    settings = Settings(max_num_seqs=64, max_model_len=2048, dtype="float32")
    vllm = make_engine(settings, None, step_costs)
    await vllm.start()
    yield vllm
    await vllm.stop()


@pytest.fixture(scope="session")
async def embedding_engine() -> AsyncIterator[Engine]:
    """The real vLLM engine on the default embedding model (pooling runner), loaded once.
    Without vLLM's metrics: exporting them would unregister the chat engine's."""
    from llmbus.consumers.vllm_engine import VllmEngine
    from llmbus.stack.model_cache import packaged_embedding_model

    settings = Settings(model=DEFAULT_EMBEDDING_MODEL, dtype="float32")
    path = str(packaged_embedding_model())
    vllm = VllmEngine.from_settings(settings, path, export_metrics=False)
    await vllm.start()
    yield vllm
    await vllm.stop()


# --- per test: fresh topics, groups, worker, auditor, client ---------------------------


@dataclass
class Bus:
    """One test's slice of the shared stack."""

    settings: Settings
    stack: LocalStack
    tasks: list[tuple[Any, asyncio.Task[None]]]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn_worker_process(
        self,
        worker_id: str,
        *,
        step_s: float = 0.05,
        max_num_seqs: int = 64,
        extra_env: dict[str, str] | None = None,
        engine: str | None = "tests.fakes.echo_engine:factory",
    ) -> subprocess.Popen[bytes]:
        """A real ``llmbus worker`` process on the deterministic stand-in engine (or, with
        ``engine=None``, on real vLLM). Its own process group, so kill -9 reaches vLLM's
        engine processes too."""
        env = {
            **self.env(),
            "LLMBUS_WORKER_ID": worker_id,
            "LLMBUS_TEST_STEP_S": str(step_s),
            "LLMBUS_MAX_NUM_SEQS": str(max_num_seqs),
            "LLMBUS_COMMIT_INTERVAL_S": "0.2",
            "LLMBUS_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        args = ["worker"]
        if engine:
            args += ["--engine", engine]
        return self.spawn_cli(args, env)

    def spawn_cli(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """``llmbus <args>`` as a process of its own group, killed at teardown."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmbus.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    async def start_gateway(
        self, extra_env: dict[str, str] | None = None, *, scheme: str = "http", verify: Any = True
    ) -> str:
        """A real ``llmbus gateway`` process on a free loopback port; returns its URL once
        /healthz answers."""
        import httpx

        port = free_port()
        env = {
            **self.env(),
            "LLMBUS_GATEWAY_PORT": str(port),
            "LLMBUS_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        proc = self.spawn_cli(["gateway"], env)
        url = f"{scheme}://127.0.0.1:{port}"
        async with httpx.AsyncClient(verify=verify) as http:
            for _ in range(300):  # up to 60 s: imports and Kafka/PostgreSQL connections
                if proc.poll() is not None:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"gateway exited {proc.returncode}: {out[-3000:]}")
                try:
                    if (await http.get(f"{url}/healthz")).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError("gateway did not become healthy")

    async def start_worker(
        self,
        engine: Engine,
        *,
        worker_id: str = "w1",
        metrics: WorkerMetrics | None = None,
        step_costs: StepCostModel | None = None,
    ) -> Worker:
        worker = Worker(
            WorkerConfig.from_settings(self.settings, worker_id),
            engine,
            metrics or WorkerMetrics(CollectorRegistry()),
            step_costs,
        )
        self.tasks.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def start_auditor(
        self, *, store_vectors: bool = False, policy: RowPolicy | None = None
    ) -> Auditor:
        s = self.settings
        auditor = Auditor(
            AuditorConfig(
                bootstrap=s.kafka_bootstrap,
                group_id=f"{s.topic_prefix}-auditor",
                topics=None,
                pattern=s.audit_pattern,  # as `llmbus auditor` subscribes
                batch_size=500,
                flush_interval_s=0.2,
                max_request_bytes=s.max_request_bytes,
                policy=policy or RowPolicy(store_vectors=store_vectors),
            ),
            AuditWriter(self.stack.postgres.url("llmbus_writer")),
            AuditMetrics(CollectorRegistry()),
        )
        self.tasks.append((auditor, asyncio.create_task(auditor.run())))
        return auditor

    def client(self, **overrides: Any) -> LlmbusClient:
        return LlmbusClient.from_settings(self.settings, **overrides)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (CLI) that should use this test's slice."""
        return {
            **os.environ,
            **self.stack.env(),
            "LLMBUS_TOPIC_PREFIX": self.settings.topic_prefix,
            "LLMBUS_MODEL": self.settings.model,
            "LLMBUS_KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,
            "LLMBUS_REQUEST_PARTITIONS": str(self.settings.request_partitions),
            "LLMBUS_REPLY_PARTITIONS": str(self.settings.reply_partitions),
            "LLMBUS_DTYPE": "float32",  # as the session engine, on any machine
        }


@contextlib.asynccontextmanager
async def open_bus(
    stack: LocalStack, prefix: str, model: str = Settings.model_fields["model"].default
) -> AsyncIterator[Bus]:
    settings = Settings(
        model=model,
        kafka_bootstrap=stack.kafka.bootstrap,
        topic_prefix=prefix,
        request_partitions=4,
        reply_partitions=4,
        request_timeout_s=180,
        commit_interval_s=0.2,
        state_dir=stack.settings.state_dir,
    )
    await ensure_topics(settings.kafka_bootstrap, settings.topics())
    the_bus = Bus(settings, stack, [])
    try:
        yield the_bus
    finally:
        for proc in the_bus.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()  # its pipe, else left to the garbage collector (a warning)
        for component, _ in the_bus.tasks:
            component.stop()
        for _, task in the_bus.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=60)


@pytest.fixture
async def bus(stack: LocalStack) -> AsyncIterator[Bus]:
    """Fresh topics (a prefix of its own) and groups on the session's stack."""
    async with open_bus(stack, f"t{uuid.uuid4().hex[:10]}") as the_bus:
        yield the_bus


@pytest.fixture
async def embedding_bus(stack: LocalStack) -> AsyncIterator[Bus]:
    """As ``bus``, for the default embedding model: its topics, workers and client."""
    async with open_bus(stack, f"t{uuid.uuid4().hex[:10]}", DEFAULT_EMBEDDING_MODEL) as the_bus:
        yield the_bus


@pytest.fixture
async def isolated_bus(stack_factory: StackFactory) -> AsyncIterator[Bus]:
    """A bus on a stack of its own, for tests that stop Kafka or PostgreSQL."""
    stack = await stack_factory()
    try:
        async with open_bus(stack, "iso") as the_bus:
            yield the_bus
    finally:
        stack.down(purge=True)


# --- Prometheus ------------------------------------------------------------------------


@pytest.fixture
async def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """A real Prometheus (Debian's binaries, unpacked by `make setup`) on a free loopback
    port: ``await prometheus_factory({job: [host:port, ...]}, rule_files=[...])`` returns
    the started ``PrometheusServer``. Each is stopped at the end of the test."""
    from llmbus.settings import default_cache_dir
    from llmbus.stack.prometheus_server import PrometheusServer, find_prometheus

    bin_dir = find_prometheus(default_cache_dir())
    servers: list[PrometheusServer] = []

    async def make(jobs: dict[str, list[str]], **options: Any) -> PrometheusServer:
        server = PrometheusServer(
            bin_dir, tmp_path_factory.mktemp("prometheus"), free_port(), jobs, **options
        )
        servers.append(server)
        await asyncio.to_thread(server.start)
        return server

    yield make
    for server in servers:
        await asyncio.to_thread(server.stop)


# --- headless Chromium -----------------------------------------------------------------


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[HeadlessChromium]:
    """Headless Chromium (Debian's, unpacked by `make setup`), started once for the session:
    ``page = await chromium.open(path)``, then ``page.errors``, ``page.evaluate(js)`` and
    ``page.screenshot(path)`` (tests/browser.py)."""
    async with HeadlessChromium() as browser:
        yield browser
