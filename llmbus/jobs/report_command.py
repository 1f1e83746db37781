"""``llmbus replay report RUN``: the report of a replay run, judged on request.

With ``--judge MODEL`` the pairs without a verdict are sent to MODEL through the batch lane
(``ReplayJudge``), the command follows the judging to its end and then reports. Stopping
it (Ctrl-C) leaves the judging running; the same command later resumes and sends nothing
twice. Without ``--judge`` the report shows the verdicts of the run's latest judging.
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
from llmbus.jobs.replay_report import build_report
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
    judge = ReplayJudge(query, store, batches)
    model = args.judge or await judge.latest_model(run_id)
    if args.judge:
        rows = await query.pairs(run_id)
        status = await store.status(run_id)
        pairs = build_report(run, rows, status=status.status).pairs
        progress = await judge.start(run, pairs, args.judge)
        if progress.started:
            print(
                f"judging {progress.sent} pairs with {args.judge}: {progress.started}"
                " (`llmbus batch cancel` stops it; this command again resumes)",
                file=sys.stderr,
            )
        if not args.no_wait:
            for judge_id in progress.judge_ids:
                await follow(judge_id)
    rows = await query.pairs(run_id)
    status = await store.status(run_id)
    verdicts = (await judge.verdicts(run_id, model))[0] if model else {}
    report = build_report(run, rows, status=status.status, verdicts=verdicts, judge_model=model)
    print(render_text(report))
    if args.html:
        args.html.write_text(render_page(report), encoding="utf-8")
        print(f"HTML report written to {args.html}")
    if args.csv:
        print(f"{write_csv(report, args.csv)} pairs written to {args.csv}")
    return 0
