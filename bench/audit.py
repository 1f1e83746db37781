"""``make bench-audit``: the auditor's ingest rate against a raw ``COPY`` of the same rows
into the same tables, in one run.

N requests (~1 KB of prompt each) and their N finals (~500 B answers) are published to
the request and replies topics first. Then ``llmbus auditor`` (a process of its own, as
deployed) drains them into PostgreSQL: decode, redaction off, idempotent inserts, usage
aggregates, offset commits. Its rate counts from the first row stored to the last (the
consumer group's join is left out, as COPY's connection is). Then the tables are emptied
and the same rows, built beforehand, are written with asyncpg's
``copy_records_to_table``: the fastest PostgreSQL ingests, and what the auditor gives up
for idempotency and aggregates. PostgreSQL runs durable (fsync on), as deployed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import metric_sums, running_stack, save_report, stop_processes
from bench.throughput import bench_settings
from llmbus.bus import BusProducer, ensure_topics
from llmbus.schemas import ChatRequest, ChatResult, Timings, encode
from llmbus.schemas.chat import ChatCompletion
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack
from llmbus.stack.processes import free_port
from llmbus.store.audit_rows import RowPolicy, request_row, result_row
from llmbus.store.audit_writer import REQUESTS, RESULTS

PROMPT = (
    "You are a careful assistant for the claims department. Answer in plain English, "
    "cite the policy clause you rely on, and say so when the documents do not settle it. "
)
QUESTION = "Customer {i} writes: my basement flooded after the storm of last week; " * 12
ANSWER = "Under clause 4.2 the policy covers sudden water damage from storms. " * 7
IN_FLIGHT = 5_000
"""Records published before waiting for acknowledgements: enough to keep batches full."""


def messages(n: int, settings: Settings) -> list[tuple[ChatRequest, ChatResult]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        req = ChatRequest.model_validate(
            {
                "request_id": f"audit-{i}",
                "created_at": now,
                "tenant_id": f"tenant-{i % 20}",
                "user_id": f"user-{i % 200}",
                "reply_to": {"topic": settings.replies_topic, "partition": i % 4},
                "body": {
                    "model": settings.model,
                    "messages": [
                        {"role": "system", "content": PROMPT},
                        {"role": "user", "content": QUESTION.format(i=i)},
                    ],
                    "max_tokens": 256,
                    "temperature": 0.2,
                },
            }
        )
        completion = ChatCompletion.model_validate(
            {
                "id": f"chatcmpl-{i}",
                "created": int(now.timestamp()),
                "model": settings.model,
                "choices": [
                    {"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": ANSWER}}
                ],
                "usage": {"prompt_tokens": 230, "completion_tokens": 110, "total_tokens": 340},
            }
        )  # fmt: skip
        result = ChatResult(
            request_id=req.request_id,
            completion=completion,
            timings=Timings(queue_ms=12.0, ttft_ms=80.0, total_ms=900.0),
            worker_id="bench",
            request=req.facts(),
        )
        out.append((req, result))
    return out


async def publish(settings: Settings, pairs: list[tuple[ChatRequest, ChatResult]]) -> None:
    producer = BusProducer(settings.kafka, client_id="bench-audit", max_request_bytes=1 << 20)
    async with producer:
        pending = []
        for req, result in pairs:
            for topic, message, key in (
                (settings.requests_topic, req, req.kafka_key),
                (settings.replies_topic, result, req.request_id),
            ):
                value, headers = encode(message)
                pending.append(await producer.enqueue(topic, value, headers, key=key.encode()))
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)


def rows_stored(port: int) -> int:
    """The auditor's own count of rows it inserted (its metrics): polling PostgreSQL with
    count(*) would scan the growing tables and take the database's CPU from the auditor."""
    sums = metric_sums(port) or {}  # None: not serving yet
    return int(sums.get("llmbus_audit_rows_total", 0.0))


def run_auditor(settings: Settings, stack: LocalStack, want: int, log: Path) -> float:
    """Rows per second stored by ``llmbus auditor``, first row to last."""
    port = free_port()
    env = {
        **os.environ,
        **stack.env(),
        "LLMBUS_TOPIC_PREFIX": settings.topic_prefix,
        "LLMBUS_METRICS_PORT": str(port),
    }
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmbus.cli", "auditor"], env=env, stdout=fh, stderr=fh
        )
    return auditor_rows_per_second(proc, port, want, log)


def auditor_rows_per_second(
    proc: subprocess.Popen[bytes], port: int, want: int, log: Path
) -> float:
    """Rows/s a started auditor (its metrics on ``port``) stores until it has ``want``
    rows, first row to last; stops it."""
    try:
        first: tuple[float, int] | None = None
        while True:
            time.sleep(0.25)  # each scrape costs the auditor CPU: not too often
            stored = rows_stored(port)
            if stored and first is None:
                first = (time.perf_counter(), stored)
            if stored >= want:
                assert first is not None
                return (stored - first[1]) / (time.perf_counter() - first[0])
            if proc.poll() is not None:
                raise RuntimeError(f"auditor exited early:\n{log.read_text()[-3000:]}")
    finally:
        stop_processes(proc)


async def run_copy(stack: LocalStack, pairs: list[tuple[ChatRequest, ChatResult]]) -> float:
    """Rows per second written by COPY, the same rows, into the emptied tables."""
    import asyncpg

    policy = RowPolicy()
    requests = [request_row(q, "t", 0, i, policy) for i, (q, _) in enumerate(pairs)]
    tables: list[tuple[str, list[tuple[str, str]], list[dict[str, Any]]]] = [
        ("requests", REQUESTS.columns, requests),
        ("results", RESULTS.columns, [result_row(r, policy) for _, r in pairs]),
    ]
    prepared = [
        (name, [c for c, _ in cols], [tuple(_cell(row[c], k) for c, k in cols) for row in rows])
        for name, cols, rows in tables
    ]
    url = stack.postgres.url("llmbus_owner").replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE llmbus.requests, llmbus.results, llmbus.usage_daily")
        start = time.perf_counter()
        for name, columns, records in prepared:
            await conn.copy_records_to_table(
                name, schema_name="llmbus", columns=columns, records=records
            )
        wall = time.perf_counter() - start
    finally:
        await conn.close()
    return sum(len(r) for _, _, r in prepared) / wall


def _cell(value: Any, kind: str) -> Any:
    return json.dumps(value) if kind == "jsonb" and value is not None else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200_000, help="requests (and as many finals)")
    args = parser.parse_args()
    settings = bench_settings()
    state = settings.state_dir
    with running_stack(settings, fast_unsafe=False) as stack:
        print(f"[bench] building {args.n} requests and finals", flush=True)
        pairs = messages(args.n, settings)
        asyncio.run(ensure_topics(settings.kafka, settings.topics()))
        start = time.perf_counter()
        asyncio.run(publish(settings, pairs))
        print(f"[bench] published {2 * args.n} records in {time.perf_counter() - start:.1f} s")
        auditor = run_auditor(settings, stack, 2 * args.n, state / "auditor.log")
        print(f"[bench] (a) llmbus auditor: {auditor:.0f} rows/s", flush=True)
        copy = asyncio.run(run_copy(stack, pairs))
        print(f"[bench] (b) COPY: {copy:.0f} rows/s", flush=True)
    report = {"n": args.n, "auditor_rows_s": auditor, "copy_rows_s": copy}
    save_report("audit", report)
    print(
        f"audit: auditor/copy ratio {auditor / copy:.2f} "
        f"(auditor {auditor:.0f} rows/s, copy {copy:.0f} rows/s)"
    )


if __name__ == "__main__":
    main()
