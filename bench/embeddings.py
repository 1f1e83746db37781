"""``make bench-embeddings``: the same texts embedded (a) by vLLM's offline ``LLM.embed``
and (b) by an llmbus embedding batch job, in one run, on the default embedding model
(all-MiniLM-L6-v2, float32, same ``max_num_seqs``).

(b) is the whole batch path: the file is submitted (``BatchJobs``: validated, recorded in
PostgreSQL, published to the batch lane), a worker process embeds it, the auditor writes
every result (with its vectors: they are the batch's output) and the clock stops when the
auditor logged the last result, one write before its commit (the bench follows the batch
as ``llmbus batch submit --wait`` does until it reads ``completed``).
Both sides get a warm-up outside the timed window. ``--rounds`` alternating rounds; the
figure is the median ratio. ``--per-line`` sets how many texts each batch line carries
(OpenAI's ``input`` list; default one, as a line per document is the common shape).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from bench import offline_llm, running_stack, save_report, stop_processes
from bench.throughput import bench_settings
from llmbus.settings import Settings
from llmbus.stack.local_stack import LocalStack
from llmbus.stack.model_cache import DEFAULT_EMBEDDING_MODEL, packaged_embedding_model
from llmbus.store.database import Database

MAX_NUM_SEQS = 64
WORDS = [
    "river",
    "stone",
    "light",
    "market",
    "garden",
    "engine",
    "winter",
    "letter",
    "signal",
    "harbour",
    "story",
]


def texts(n: int) -> list[str]:
    """Sentences of 6 to 30 words, each different (no prefix cache to lean on)."""
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(6 + i % 25)]
        out.append(f"Document {i}: " + " ".join(words) + ".")
    return out


def run_offline(corpus: list[str]) -> float:
    llm = offline_llm(
        model=str(packaged_embedding_model()),
        runner="pooling",
        max_num_seqs=MAX_NUM_SEQS,
        dtype="float32",
        disable_log_stats=True,
    )
    llm.embed(corpus[:8], use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.embed(corpus, use_tqdm=False)
    wall = time.perf_counter() - start
    assert len(outputs) == len(corpus)
    assert len(outputs[0].outputs.embedding) == 384
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return wall


def write_file(path: Path, corpus: list[str], per_line: int) -> int:
    lines = 0
    with path.open("w") as fh:
        for start in range(0, len(corpus), per_line):
            chunk = corpus[start : start + per_line]
            body = {"model": DEFAULT_EMBEDDING_MODEL, "input": chunk[0] if per_line == 1 else chunk}
            line = {"custom_id": f"l{lines}", "method": "POST", "url": "/v1/embeddings"}
            fh.write(json.dumps({**line, "body": body}) + "\n")
            lines += 1
    return lines


def spawn(
    settings: Settings, stack: LocalStack, command: str, log: Path
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **stack.env(),
        "LLMBUS_TOPIC_PREFIX": settings.topic_prefix,
        "LLMBUS_MODEL": DEFAULT_EMBEDDING_MODEL,
        "LLMBUS_MAX_NUM_SEQS": str(MAX_NUM_SEQS),
        "LLMBUS_DTYPE": "float32",
    }
    with log.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "llmbus.cli", command], env=env, stdout=fh, stderr=fh
        )


async def run_llmbus(settings: Settings, stack: LocalStack, path: Path) -> tuple[float, int]:
    """Seconds from submitting ``path`` as a batch job to its last result being logged."""
    from llmbus.bus import ensure_topics
    from llmbus.jobs.batch_jobs import SubmitOptions
    from llmbus.jobs.commands import open_jobs
    from llmbus.producers import LlmbusClient

    settings = settings.model_copy(
        update={
            "model": DEFAULT_EMBEDDING_MODEL,
            "database_url": SecretStr(stack.postgres.url("llmbus_writer")),
        }
    )
    await ensure_topics(settings.kafka, settings.topics())
    async with LlmbusClient.from_settings(settings, timeout_s=900) as client:
        await client.embed(["warm up"])  # waits for the worker's engine
    async with open_jobs(settings, publishes=True) as jobs:
        submitted_at = datetime.now(UTC)
        submitted = await jobs.batches.submit(path, SubmitOptions())
        # What `llmbus batch submit --wait` does: its status reads count the batch's result rows,
        # and read ten times a second they took a fifth of a core from the engine (0.51 of
        # offline instead of 0.64, 2026-11-29). The clock does not wait for the poller: it
        # stops when the last result was logged.
        status = await jobs.batches.wait(submitted.batch_id)
        last_logged = await last_logged_at(jobs.db, submitted.batch_id)
    assert status.status == "completed", status
    assert status.completed == submitted.total, status
    return (last_logged - submitted_at).total_seconds(), submitted.total


async def last_logged_at(db: Database, batch_id: str) -> datetime:
    """When the auditor logged the batch's last result: it stamps each row as it decodes
    the result, one write before that row's commit."""
    from sqlalchemy import and_, func, select

    from llmbus.store.tables import near_batch, requests, results, same_request

    last = (
        select(func.max(results.c.logged_at))
        .select_from(results.join(requests, same_request(results, requests)))
        .where(
            and_(
                requests.c.batch_id == batch_id,
                *near_batch(batch_id, requests.c.created_at, results.c.created_at),
            )
        )
    )
    async with db.engine.connect() as conn:
        found: datetime | None = (await conn.execute(last)).scalar_one()
    assert found is not None, f"batch {batch_id} has no logged results"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000, help="texts")
    parser.add_argument("--per-line", type=int, default=1, help="texts per batch line")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    corpus = texts(args.n)
    settings = bench_settings()
    state = settings.state_dir
    lines = write_file(state / "embed.jsonl", corpus, args.per_line)
    rounds: list[tuple[float, float]] = []
    with running_stack(settings) as stack:
        # Alternating rounds (offline, llmbus, offline, ...): this machine drifts by several
        # percent between runs, and a ratio of neighbours cancels most of the drift.
        for r in range(1, args.rounds + 1):
            print(f"[bench] round {r}: (a) vLLM offline LLM.embed, {args.n} texts", flush=True)
            offline_s = run_offline(corpus)
            print(f"[bench] round {r}: (b) llmbus, {lines} lines of {args.per_line}", flush=True)
            # Topics of its own: a worker would otherwise first read the previous round's
            # answered log (every vector again).
            fresh = settings.model_copy(update={"topic_prefix": f"bench-r{r}"})
            worker = spawn(fresh, stack, "worker", state / f"worker-{r}.log")
            auditor = spawn(fresh, stack, "auditor", state / f"auditor-{r}.log")
            try:
                llmbus_s, _ = asyncio.run(run_llmbus(fresh, stack, state / "embed.jsonl"))
            finally:
                stop_processes(worker, auditor)
            rounds.append((args.n / offline_s, args.n / llmbus_s))
            print(f"[bench] round {r}: ratio {rounds[-1][1] / rounds[-1][0]:.3f}", flush=True)
    ratios = [b / a for a, b in rounds]
    ratio = statistics.median(ratios)
    rate = statistics.median(b for _, b in rounds)
    report = {"texts": args.n, "per_line": args.per_line, "rounds": rounds, "ratios": ratios}
    save_report("embeddings", report)
    for r, (a, b) in enumerate(rounds, 1):
        print(
            f"round {r}: (a) vLLM offline LLM.embed {a:6.1f} texts/s, (b) llmbus batch job "
            f"{b:6.1f} texts/s ({lines} lines of {args.per_line}, submit to last result logged), "
            f"ratio {b / a:.3f}"
        )
    print(
        f"median of {len(ratios)} rounds, spread {min(ratios):.3f}-{max(ratios):.3f}; "
        f"(b) is the batch's whole path: submit, worker, auditor, every result in PostgreSQL"
    )
    print(f"embeddings: llmbus/offline ratio {ratio:.3f} ({rate:.0f} texts/s)")


if __name__ == "__main__":
    main()
