"""``llmbus replay report RUN``: the report of a replay run, judged on request.

With ``--judge MODEL`` the pairs without a verdict are sent to MODEL through the batch lane
(``ReplayJudge``), the command follows the judging to its end and then reports. Stopping
it (Ctrl-C) leaves the judging running; the same command later follows it and then sends
what it left (pairs cancelled or expired). Without ``--judge`` the report shows the
verdicts of the run's latest judging.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from llmbus.jobs.batch_jobs import BatchJobs
from llmbus.jobs.replay_csv import write_csv
from llmbus.jobs.replay_judge import ReplayJudge
from llmbus.jobs.replay_page import render_page
from llmbus.jobs.replay_report import build_report, pairs_of
from llmbus.jobs.replay_text import render_text
from llmbus.store.batch_store import BatchStore
from llmbus.store.replay_query import ReplayQuery


async def replay_report(
    run_id: str,
    args: argparse.Namespace,
    *,
    query: ReplayQuery,
    store: BatchStore,
    batches: BatchJobs | None,
    follow: Callable[[str], Awaitable[Any]],
) -> int:
    run = await query.run(run_id)
    if run is None or run["kind"] != "replay":
        print(f"no replay run {run_id!r} (`llmbus batch list` shows runs)", file=sys.stderr)
        return 1
    judge = ReplayJudge(query, store)
    model = args.judge or await judge.latest_model(run_id)
    if args.judge and batches is not None:
        await _judge(run, args, query, store, judge, batches, follow)
    rows = await query.pairs(run_id)
    status = await store.status(run_id)
    state = await judge.state(run_id, model) if model else None
    report = build_report(
        run,
        rows,
        status=status.status,
        verdicts=state.verdicts if state else None,
        judge_model=model,
        judge_failed=len(state.failed) if state else 0,
    )
    print(render_text(report))
    if args.html:
        args.html.write_text(render_page(report), encoding="utf-8")
        print(f"HTML report written to {args.html}")
    if args.csv:
        print(f"{write_csv(report, args.csv)} pairs written to {args.csv}")
    return 0


async def _judge(
    run: dict[str, Any],
    args: argparse.Namespace,
    query: ReplayQuery,
    store: BatchStore,
    judge: ReplayJudge,
    batches: BatchJobs,
    follow: Callable[[str], Awaitable[Any]],
) -> None:
    # Twice at most: a judging still running is followed first, then what it left is sent.
    for _ in range(2):
        pairs = pairs_of(await query.pairs(run["batch_id"]))
        progress = await judge.start(run, pairs, args.judge, batches)
        if progress.started:
            print(
                f"judging {progress.sent} pairs with {args.judge}: {progress.started}"
                " (`llmbus batch cancel` stops it; this command again resumes)",
                file=sys.stderr,
            )
        elif progress.state.running:
            print(
                f"following the judging under way: {', '.join(progress.state.running)}",
                file=sys.stderr,
            )
        if args.no_wait:
            return
        ended = [await follow(judge_id) for judge_id in progress.judge_ids]
        if not progress.state.running:
            return
        cancelled = [s.batch_id for s in ended if s.status == "cancelled"]
        if cancelled:
            # Somebody cancelled it: sending its pairs again would undo that.
            print(
                f"judging {', '.join(cancelled)} was cancelled; run this command again to "
                "judge the pairs it left",
                file=sys.stderr,
            )
            return
