"""``make bench-capacity``: how many requests per second llmbus itself carries when the
engine is not the limit, on a three-node KRaft cluster (topics with three replicas, two
in sync, acks=all).

The engine is the stand-in (``tests/fakes/echo_engine.py`` with no step time: an answer
is ready as soon as it is asked for), so what is measured is llmbus: decoding, lanes,
the answered-log write, the final, offset commits; and the client's side.

Stages, each timed on its own so the figures do not share the two cores:
1. the client publishes N requests (``LlmbusClient.build_request`` + the bus producer);
2. one ``llmbus worker`` process drains them; a reply reader per partition counts the
   finals as a client's router finds them (by header): requests/s, first final to last;
3. the same with two worker processes on N fresh requests;
4. one client process decodes those finals into ``ChatResult``s: finals/s;
5. ``llmbus auditor`` stores the first stage's requests and finals: rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import cpu_seconds, running_stack, save_report, stop_processes
from bench.audit import auditor_rows_per_second
from llmbus.bus import BusProducer, PartitionReader, Record, ensure_topics
from llmbus.producers import LlmbusClient
from llmbus.schemas import ChatResult, decode, encode
from llmbus.schemas.wire import H_KIND, header
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack
from llmbus.stack.processes import free_port

WORKER_SEQS = 512
"""In flight per worker: with instant answers, enough that the engine never waits."""
IN_FLIGHT = 5_000
"""Records published before waiting for acknowledgements: enough to keep batches full."""


def cluster_settings(state: Path, prefix: str, bootstrap: str, postgres_port: int) -> Settings:
    return Settings(
        state_dir=state,
        kafka_bootstrap=bootstrap,
        postgres_port=postgres_port,
        topic_prefix=prefix,
        request_partitions=8,
        reply_partitions=8,
    )


async def publish(settings: Settings, n: int) -> float:
    """Requests/s the client side publishes (build, encode, produce, acknowledged)."""
    client = LlmbusClient.from_settings(settings, reply_partition=0)
    producer = BusProducer(settings.kafka, client_id="bench-capacity", max_request_bytes=1 << 20)
    async with producer:
        start = time.perf_counter()
        pending = []
        for i in range(n):
            request = client.build_request(
                f"question {i}: what is {i} plus one?", request_id=f"cap-{i}", max_tokens=8
            )
            request = request.model_copy(
                update={"reply_to": request.reply_to.model_copy(update={"partition": i % 8})}
            )
            value, headers = encode(request)
            key = request.kafka_key.encode()
            pending.append(await producer.enqueue(settings.requests_topic, value, headers, key=key))
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        return n / (time.perf_counter() - start)


async def read_finals(
    settings: Settings, n: int, pids: list[int]
) -> tuple[float, float, list[Record]]:
    """Requests/s answered: finals counted (by their kind header, as a client's router
    skips others' replies) by one reader per reply partition, first final to last; and
    the workers' CPU milliseconds per request over the same span."""
    finals: list[Record] = []
    first: float | None = None
    cpu_at_first = 0.0
    # Even at a tenth of the rate measured here, N requests drain well within this; a
    # dead worker must not leave the benchmark waiting forever.
    give_up = time.perf_counter() + 60 + n / 100

    async def read(partition: int) -> None:
        nonlocal first, cpu_at_first
        async with PartitionReader(
            settings.kafka,
            topic=settings.replies_topic,
            partition=partition,
            client_id="cap",
            from_beginning=True,
        ) as reader:
            while len(finals) < n:
                if time.perf_counter() > give_up:
                    raise RuntimeError(f"{len(finals)} of {n} finals: see the worker logs")
                for record in await reader.getmany(timeout_ms=200):
                    if header(record.headers, H_KIND) == "result":
                        if first is None:
                            first, cpu_at_first = time.perf_counter(), cpu_seconds(pids)
                        finals.append(record)

    await asyncio.gather(*(read(p) for p in range(settings.reply_partitions)))
    assert first is not None
    cpu_ms = 1000 * (cpu_seconds(pids) - cpu_at_first) / len(finals)
    return n / (time.perf_counter() - first), cpu_ms, finals


def decode_rate(finals: list[Record]) -> float:
    """Finals/s one client process turns into ``ChatResult``s (the client's own cost)."""
    start = time.perf_counter()
    for record in finals:
        assert isinstance(decode(record.value, record.headers), ChatResult)
    return len(finals) / (time.perf_counter() - start)


def start_process(
    args: list[str], settings: Settings, stack: LocalStack, log: Path, extra: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack.env(),
        "LLMBUS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LLMBUS_TOPIC_PREFIX": settings.topic_prefix,
        "LLMBUS_REQUEST_PARTITIONS": str(settings.request_partitions),
        "LLMBUS_REPLY_PARTITIONS": str(settings.reply_partitions),
        "LLMBUS_LOG_LEVEL": "WARNING",
        **extra,
    }
    with log.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "llmbus.cli", *args], env=env, stdout=fh, stderr=fh
        )


def workers_rate(
    settings: Settings, stack: LocalStack, n: int, workers: int
) -> tuple[float, float, list[Record]]:
    procs = [
        start_process(
            ["worker", "--engine", "tests.fakes.echo_engine:factory"],
            settings,
            stack,
            settings.state_dir / f"{settings.topic_prefix}-w{i}.log",
            {
                "LLMBUS_TEST_STEP_S": "0",
                "LLMBUS_MAX_NUM_SEQS": str(WORKER_SEQS),
                "LLMBUS_WORKER_ID": f"cap-{i}",
            },
        )
        for i in range(workers)
    ]
    try:
        return asyncio.run(read_finals(settings, n, [proc.pid for proc in procs]))
    finally:
        stop_processes(*procs)


def auditor_rate(settings: Settings, stack: LocalStack, want: int) -> float:
    port = free_port()
    log = settings.state_dir / "auditor.log"
    proc = start_process(["auditor"], settings, stack, log, {"LLMBUS_METRICS_PORT": str(port)})
    return auditor_rows_per_second(proc, port, want, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=30_000, help="requests per worker stage")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="llmbus-bench-"))
    ports = [(free_port(), free_port()) for _ in range(3)]
    base = Settings(state_dir=state, postgres_port=free_port())
    with running_stack(base, fast_unsafe=False, kafka_ports=ports) as stack:
        one = cluster_settings(state, "cap1", stack.kafka.bootstrap, base.postgres_port)
        two = cluster_settings(state, "cap2", stack.kafka.bootstrap, base.postgres_port)
        rates: dict[str, float] = {}
        cpu_ms: dict[str, float] = {}
        for label, settings, workers in (("1 worker", one, 1), ("2 workers", two, 2)):
            asyncio.run(ensure_topics(settings.kafka, settings.topics()))
            published = asyncio.run(publish(settings, args.n))
            print(f"[bench] client published {args.n} requests: {published:.0f} req/s")
            rates[label], cpu_ms[label], finals = workers_rate(settings, stack, args.n, workers)
            print(
                f"[bench] {label}: {rates[label]:.0f} req/s; worker CPU "
                f"{cpu_ms[label]:.2f} ms per request ({1000 / cpu_ms[label]:.0f} req/s per "
                "busy core)",
                flush=True,
            )
        decoded = decode_rate(finals)
        print(f"[bench] client decodes {decoded:.0f} finals/s", flush=True)
        audit = auditor_rate(one, stack, 2 * args.n)  # cap1: its requests and finals
        print(f"[bench] auditor: {audit:.0f} rows/s", flush=True)
    report = {
        "n": args.n,
        "brokers": 3,
        "publish_req_s": published,
        "client_decode_finals_s": decoded,
        "one_worker_req_s": rates["1 worker"],
        "two_workers_req_s": rates["2 workers"],
        "worker_cpu_ms_per_request": cpu_ms["1 worker"],
        "auditor_rows_s": audit,
    }
    save_report("capacity", report)
    print(
        f"capacity: {rates['1 worker']:.0f} req/s per worker process "
        f"(2 workers: {rates['2 workers']:.0f} req/s, auditor {audit:.0f} rows/s)"
    )


if __name__ == "__main__":
    main()
