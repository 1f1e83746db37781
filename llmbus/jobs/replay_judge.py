"""``ReplayJudge``: a served model says, for each compared pair of a replay run, which
answer is better, through llmbus's own batch lane.

Judging is a batch job of kind ``judge`` (params ``judge_of``: the run, ``model``): it has
progress, can be cancelled with ``llmbus batch cancel``, and every prompt and verdict is
in the audit trail. Starting again resumes: pairs that already have a verdict, or whose
judging is still under way, are not sent again; only the rest (never judged, or whose
judge request failed or was cancelled) go into a new judge batch. Each pair is shown to
the judge in an order drawn at random, recorded in its request's metadata, so a judge's
preference for the first answer does not read as a preference for either side.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from llmbus.jobs.batch_jobs import BatchJobs
from llmbus.jobs.judge_verdicts import JUDGE_SCHEMA, Verdict, parse_verdict
from llmbus.jobs.replay_report import Pair
from llmbus.schemas import ChatCompletionRequest, ChatRequest, Priority
from llmbus.store.batch_store import BatchStore, new_batch_id
from llmbus.store.replay_query import ReplayQuery

INSTRUCTIONS = (
    "You compare two answers, A and B, to the same conversation. Decide which answer is "
    "better: more correct, more helpful and better suited to the request. Answer 'tie' "
    "when neither is better. Reply with JSON: better (A, B or tie) and a one-line reason."
)

CLIP_CHARS = 1500
"""Each text (conversation, answer A, answer B) is cut to this many characters: three of
them with the instructions stay well inside a 2,048-token context (about 4 characters per
token), so no pair is refused for its length."""

MAX_TOKENS = 96
"""Enough for the verdict and a reason of at most 160 characters (``JUDGE_SCHEMA``)."""


@dataclass(frozen=True)
class JudgeProgress:
    judge_ids: list[str]
    """Judge batches of this run and model that are still running (including a new one)."""
    started: str | None
    """The judge batch started now, if any pair needed judging."""
    sent: int
    verdicts: dict[str, Verdict]
    """By replay request id: the first verdict each compared pair got."""


class ReplayJudge:
    def __init__(self, query: ReplayQuery, store: BatchStore, jobs: BatchJobs | None) -> None:
        self._query = query
        self._store = store
        self._jobs = jobs
        """None for reading verdicts only (no Kafka)."""

    async def verdicts(self, run_id: str, model: str) -> tuple[dict[str, Verdict], list[str]]:
        """Verdicts so far (the oldest per pair) and the judge batches still running."""
        verdicts: dict[str, Verdict] = {}
        running: list[str] = []
        for judge in await self._query.judge_runs(run_id):
            if judge["params"].get("model") != model:
                continue
            status = await self._store.status(judge["batch_id"])
            if status.finished_at is None:
                running.append(judge["batch_id"])
            for row in await self._query.judge_answers(judge["batch_id"]):
                pair = row["metadata"].get("pair")
                if row["status"] != "ok" or pair is None or pair in verdicts:
                    continue
                verdict = parse_verdict(row["output"], row["metadata"].get("first", ""))
                if verdict is not None:
                    verdicts[pair] = verdict
        return verdicts, running

    async def latest_model(self, run_id: str) -> str | None:
        """The model of the run's most recent judging, for a report asked without one."""
        runs = await self._query.judge_runs(run_id)
        return str(runs[-1]["params"]["model"]) if runs else None

    async def start(
        self,
        run: dict[str, Any],
        pairs: list[Pair],
        model: str,
        *,
        on_acked: Callable[[int], None] | None = None,
    ) -> JudgeProgress:
        """Send the compared pairs that have no verdict and are not being judged."""
        if self._jobs is None:
            raise RuntimeError("ReplayJudge was opened for reading verdicts only")
        run_id = run["batch_id"]
        verdicts, running = await self.verdicts(run_id, model)
        in_flight = await self._in_flight(running)
        taken = set(verdicts) | in_flight
        todo = [p for p in pairs if p.state == "compared" and p.request_id not in taken]
        if not todo:
            return JudgeProgress(running, None, 0, verdicts)
        judge_id = new_batch_id("judge")
        now = datetime.now(UTC)
        reply_to = await self._jobs.reply_to(judge_id)
        requests = [
            ChatRequest(
                request_id=f"{judge_id}-{n}",
                created_at=now,
                reply_to=reply_to,
                priority=Priority.LOW,
                # A judge batch is as patient as a replay run: a day, like OpenAI batches.
                deadline=now + timedelta(hours=24),
                tenant_id=pair.tenant_id,
                batch_id=judge_id,
                metadata={"pair": pair.request_id, "first": first},
                body=judge_body(model, pair, first),
            )
            for n, (pair, first) in enumerate(((p, _first()) for p in todo), start=1)
        ]
        await self._jobs.enqueue(
            judge_id,
            requests,
            kind="judge",
            tenant_id=run.get("tenant_id"),
            user_id=None,
            source=None,
            params={"judge_of": run_id, "model": model},
            on_acked=on_acked,
        )
        return JudgeProgress([*running, judge_id], judge_id, len(requests), verdicts)

    async def _in_flight(self, running: list[str]) -> set[str]:
        """Pairs whose judge request, in a batch still running, has no result yet."""
        pairs: set[str] = set()
        for judge_id in running:
            for row in await self._query.judge_answers(judge_id):
                if row["status"] is None and "pair" in row["metadata"]:
                    pairs.add(row["metadata"]["pair"])
        return pairs


def _first() -> str:
    return secrets.choice(("original", "replay"))


def judge_body(model: str, pair: Pair, first: str) -> ChatCompletionRequest:
    a, b = (pair.original, pair.replay) if first == "original" else (pair.replay, pair.original)
    return ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {
                    "role": "user",
                    "content": (
                        f"Conversation:\n{_clip(pair.prompt)}\n\n"
                        f"Answer A:\n{_clip(a.output or '')}\n\n"
                        f"Answer B:\n{_clip(b.output or '')}\n\n"
                        "Which answer is better?"
                    ),
                },
            ],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": JUDGE_SCHEMA, "strict": True},
            },
        }
    )


def _clip(text: str) -> str:
    return text if len(text) <= CLIP_CHARS else text[: CLIP_CHARS - 1] + "…"
