"""``llmbus batch …``, ``llmbus replay …`` and ``llmbus export``: argument parsing and
output; the work is done by BatchJobs, ReplayRuns and the store."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from llmbus.bus import BusProducer, ensure_topics
from llmbus.errors import BatchInputError, SetupError
from llmbus.jobs.batch_jobs import BatchJobs, SubmitOptions
from llmbus.jobs.export import export_rows
from llmbus.jobs.progress import ProgressBar
from llmbus.jobs.replay_runs import ReplayOptions, ReplayRuns
from llmbus.jobs.report_command import replay_report
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.schemas import Priority
from llmbus.settings import Settings
from llmbus.store.batch_store import BatchStatus, BatchStore
from llmbus.store.conversation_query import ConversationFilter, ConversationQuery
from llmbus.store.database import Database
from llmbus.store.replay_query import ReplayQuery


@dataclass
class Jobs:
    batches: BatchJobs
    store: BatchStore
    replays: ReplayRuns
    query: ConversationQuery
    db: Database


@contextlib.asynccontextmanager
async def open_jobs(
    settings: Settings, *, analyst: bool = False, publishes: bool = False
) -> AsyncIterator[Jobs]:
    """Database (and, for commands that publish, Kafka) clients for one command. Reading
    commands never touch Kafka, so they work while the broker is away. Analysts'
    read-only commands use the reader role when it is configured."""
    url = (settings.analyst_database_url if analyst else None) or settings.database_url
    if url is None:
        raise SetupError("LLMBUS_DATABASE_URL is not set (run `llmbus up` or set it)")
    producer = BusProducer(
        settings.kafka,
        client_id="llmbus-batch",
        max_request_bytes=settings.max_request_bytes,
    )
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database(url.get_secret_value()))
        if publishes:
            await ensure_topics(settings.kafka, settings.topics(), layout=settings.topic_layout)
            # Unstarted otherwise: a publish by mistake fails with NotStartedError.
            await stack.enter_async_context(producer)
        store = BatchStore(db)
        publisher = BatchPublisher.from_settings(producer, settings)
        query = ConversationQuery(db)
        batches = BatchJobs(store, publisher)
        yield Jobs(batches, store, ReplayRuns(query, batches), query, db)


def _status_line(s: BatchStatus) -> str:
    return (
        f"{s.batch_id}  {s.kind:<6} {s.status:<11} total {s.total}  completed {s.completed}  "
        f"failed {s.failed}  cancelled {s.cancelled}  expired {s.expired}  "
        f"in progress {s.in_progress}  "
        f"created {s.created_at:%Y-%m-%d %H:%M:%S}"
    )


def _status_json(s: BatchStatus) -> str:
    data = dict(s.__dict__)
    data["in_progress"] = s.in_progress
    return json.dumps(data, default=lambda v: v.isoformat() if isinstance(v, datetime) else v)


async def _follow(jobs: Jobs, batch_id: str) -> BatchStatus:
    status = await jobs.store.status(batch_id)
    bar = ProgressBar("done", status.total)

    def show(s: BatchStatus) -> None:
        bar.update(s.done, f"{s.status}, {s.failed} failed, {s.cancelled} cancelled")

    final = await jobs.batches.wait(batch_id, show)
    bar.close()
    return final


async def cmd_batch(settings: Settings, args: argparse.Namespace) -> int:
    async with open_jobs(settings, publishes=args.action in ("submit", "cancel")) as jobs:
        if args.action == "submit":
            return await _submit(jobs, args)
        if args.action == "status":
            status = await jobs.store.status(args.batch_id)
            print(_status_json(status) if args.json else _status_line(status))
        elif args.action == "list":
            for status in await jobs.store.recent(limit=args.limit):
                print(_status_line(status))
        elif args.action == "results":
            n_ok, n_err = await jobs.batches.write_results(args.batch_id, args.output, args.errors)
            print(f"{n_ok} results and {n_err} errors written")
        elif args.action == "cancel":
            status = await jobs.batches.cancel(args.batch_id)
            print(_status_line(status))
    return 0


async def _submit(jobs: Jobs, args: argparse.Namespace) -> int:
    options = SubmitOptions(
        model=args.model,
        priority=Priority(args.priority),
        tenant_id=args.tenant,
        user_id=args.user,
        skip_invalid=args.skip_invalid,
        completion_window=timedelta(hours=args.completion_window_h),
    )
    bars: list[ProgressBar] = []
    try:
        submitted = await jobs.batches.submit(
            args.file,
            options,
            on_acked=lambda n: bars[0].advance(n),
            on_total=lambda total: bars.append(ProgressBar("published", total)),
        )
    except BatchInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    bars[0].close()
    for line_error in submitted.skipped.errors:
        print(f"skipped {line_error}", file=sys.stderr)
    print(submitted.batch_id)
    if args.wait:
        final = await _follow(jobs, submitted.batch_id)
        print(_status_line(final))
    return 0


def _filter(args: argparse.Namespace, *, only_ok: bool) -> ConversationFilter:
    return ConversationFilter(
        since=args.since,
        until=args.until,
        tenant_id=args.tenant,
        model=args.model,
        batch_id=args.batch,
        request_ids=tuple(args.request_id or ()),
        text=args.text,
        only_ok=only_ok,
        limit=args.limit,
    )


async def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    if args.what:
        if len(args.what) != 2 or args.what[0] != "report":
            print(
                "usage: llmbus replay report RUN_ID [--html FILE] [--csv FILE] [--judge MODEL]",
                file=sys.stderr,
            )
            return 2
        # Judging publishes and records a batch; a plain report only reads (reader role).
        judging = args.judge is not None
        async with open_jobs(settings, analyst=not judging, publishes=judging) as jobs:
            return await replay_report(
                args.what[1],
                args,
                query=ReplayQuery(jobs.db),
                store=jobs.store,
                batches=jobs.batches if judging else None,
                follow=lambda judge_id: _follow(jobs, judge_id),
            )
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_tokens": args.max_tokens,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    options = ReplayOptions(model=args.to_model, overrides=overrides)
    async with open_jobs(settings, publishes=not args.dry_run) as jobs:
        started = await jobs.replays.start(
            _filter(args, only_ok=True), options, dry_run=args.dry_run
        )
        if args.dry_run:
            print(f"{started.count} conversations would be replayed")
            return 0
        if started.run_id is None or started.count == 0:
            print(started.run_id or "")
            print("no logged conversations match: the run is recorded empty", file=sys.stderr)
            return 1
        print(started.run_id)
        print(f"{started.count} conversations replayed", file=sys.stderr)
        if args.wait:
            print(_status_line(await _follow(jobs, started.run_id)))
    return 0


async def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    async with open_jobs(settings, analyst=True) as jobs:
        rows = await jobs.query.fetch(_filter(args, only_ok=False), embeddings=args.embeddings)
    print(f"{export_rows(rows, args.output)} conversations written to {args.output}")
    return 0


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (e.g. {value}Z)")
    return parsed


def _add_filters(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection")
    g.add_argument("--since", type=_when, help="created at or after (ISO 8601 with zone)")
    g.add_argument("--until", type=_when, help="created before (ISO 8601 with zone)")
    g.add_argument("--tenant")
    g.add_argument("--model", help="the original model")
    g.add_argument("--batch", help="a batch or replay run id")
    g.add_argument("--request-id", action="append", help="repeatable")
    g.add_argument("--text", help="words that must all appear in the messages")
    g.add_argument("--limit", type=int)


def add_parsers(sub: Any) -> None:
    batch = sub.add_parser("batch", help="OpenAI-Batch-style jobs")
    bsub = batch.add_subparsers(dest="action", required=True)
    submit = bsub.add_parser("submit", help="validate and enqueue a JSONL file")
    submit.add_argument("file", type=Path)
    submit.add_argument("--model", help="use this model for every line")
    submit.add_argument("--priority", choices=[p.value for p in Priority], default="low")
    submit.add_argument("--tenant")
    submit.add_argument("--user")
    submit.add_argument("--skip-invalid", action="store_true")
    submit.add_argument("--completion-window-h", type=float, default=24.0)
    submit.add_argument("--wait", action="store_true", help="follow progress to the end")
    status = bsub.add_parser("status")
    status.add_argument("batch_id")
    status.add_argument("--json", action="store_true")
    listing = bsub.add_parser("list")
    listing.add_argument("--limit", type=int, default=20)
    results = bsub.add_parser("results", help="write OpenAI Batch output lines")
    results.add_argument("batch_id")
    results.add_argument("-o", "--output", type=Path, required=True)
    results.add_argument("--errors", type=Path, help="failed requests here instead")
    cancel = bsub.add_parser("cancel")
    cancel.add_argument("batch_id")
    batch.set_defaults(func=cmd_batch)

    replay = sub.add_parser(
        "replay", help="re-enqueue logged conversations; `replay report RUN` compares"
    )
    replay.add_argument("what", nargs="*", help="`report RUN_ID` for a report")
    _add_filters(replay)
    target = replay.add_argument_group("replay against")
    target.add_argument("--to-model", help="target model (default: each original's)")
    target.add_argument("--temperature", type=float)
    target.add_argument("--top-p", type=float)
    target.add_argument("--max-tokens", type=int)
    target.add_argument("--seed", type=int)
    replay.add_argument("--dry-run", action="store_true", help="only count")
    replay.add_argument("--wait", action="store_true")
    replay.add_argument("--html", type=Path, help="report: also write an HTML page")
    replay.add_argument("--csv", type=Path, help="report: also write every pair as CSV")
    replay.add_argument(
        "--judge",
        metavar="MODEL",
        help="report: have MODEL judge each pair through the batch lane (resumes)",
    )
    replay.add_argument(
        "--no-wait", action="store_true", help="report --judge: start judging, do not follow"
    )
    replay.set_defaults(func=cmd_replay)

    export = sub.add_parser("export", help="selected conversations to .jsonl or .parquet")
    _add_filters(export)
    export.add_argument("-o", "--output", type=Path, required=True)
    export.add_argument(
        "--embeddings",
        action="store_true",
        help="add each result's embedding vectors (where the audit trail stored them)",
    )
    export.set_defaults(func=cmd_export)
