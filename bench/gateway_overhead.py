"""``make bench`` (third figure): the gateway's cost. The same N chat requests, all sent at
once, (a) directly with the Kafka client (``LlmbusClient``) and (b) through
``llmbus gateway`` with HTTP (OpenAI's wire format), against one worker process on the
default model, in one run. Prints requests/s and p50/p95 latency of each, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import httpx
from pydantic import SecretStr

from bench import running_stack, save_report, stop_processes
from bench.throughput import bench_settings, percentile, prompts, start_worker
from llmbus.producers import LlmbusClient
from llmbus.settings import Settings
from llmbus.stack.processes import free_port
from llmbus.store.api_keys import KeyStore
from llmbus.store.database import Database


async def timed(calls: list[Callable[[], Awaitable[None]]]) -> dict[str, float]:
    latencies: list[float] = []

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        t0 = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in calls))
    wall = time.perf_counter() - start
    return {
        "req_s": len(calls) / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
    }


async def measure(
    settings: Settings, url: str, key: str, n: int, max_tokens: int
) -> dict[str, dict[str, float]]:
    questions = prompts(n)
    async with (
        LlmbusClient.from_settings(settings, timeout_s=900) as client,
        httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=900
        ) as http,
    ):
        await client.chat("warm up", max_tokens=4, temperature=0.0)  # waits for the worker

        def direct(q: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                await client.chat(q, max_tokens=max_tokens, temperature=0.0)

            return call

        def via_gateway(q: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                body = {"model": settings.model, "max_tokens": max_tokens, "temperature": 0,
                        "messages": [{"role": "user", "content": q}]}  # fmt: skip
                response = await http.post("/v1/chat/completions", json=body)
                response.raise_for_status()

            return call

        await via_gateway("warm up")()
        a = await timed([direct(q) for q in questions])
        b = await timed([via_gateway(q) for q in questions])
    return {"direct": a, "gateway": b}


async def create_key(settings: Settings) -> str:
    assert settings.database_url is not None
    async with Database(settings.database_url.get_secret_value()) as db:
        key, _ = await KeyStore(db).create(
            tenant_id="bench", user_id=None, rpm=100_000, tpm=10_000_000
        )
    return key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    settings = bench_settings()
    print("[bench] gateway overhead: starting Kafka + PostgreSQL + worker + gateway", flush=True)
    with running_stack(settings) as stack:
        settings = settings.model_copy(
            update={"database_url": SecretStr(stack.postgres.url("llmbus_writer"))}
        )
        worker = start_worker(settings, settings.state_dir / "worker.log")
        port = free_port()
        env = {**os.environ, **stack.env(), "LLMBUS_TOPIC_PREFIX": settings.topic_prefix,
               "LLMBUS_GATEWAY_PORT": str(port), "LLMBUS_LOG_LEVEL": "WARNING"}  # fmt: skip
        with open(settings.state_dir / "gateway.log", "w") as log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "llmbus.cli", "gateway"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            key = asyncio.run(create_key(settings))
            figures = asyncio.run(
                measure(settings, f"http://127.0.0.1:{port}", key, args.n, args.max_tokens)
            )
        finally:
            stop_processes(gateway, worker)
    a, b = figures["direct"], figures["gateway"]
    ratio = b["req_s"] / a["req_s"]
    save_report("gateway_overhead", {**vars(args), **figures, "ratio": ratio})
    for name, f in (("(a) Kafka client", a), ("(b) gateway HTTP", b)):
        print(f"{name}: {f['req_s']:6.2f} req/s, p50 {f['p50_s']:.2f} s, p95 {f['p95_s']:.2f} s "
              f"({args.n} requests at once, max_tokens={args.max_tokens})")  # fmt: skip
    print(f"ratio req/s (b)/(a): {ratio:.3f}")


if __name__ == "__main__":
    main()
