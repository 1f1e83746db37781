"""``ReplayJudge``: a served model says, for each compared pair of a replay run, which
answer is better, through llmbus's own batch lane.

Judging is a batch job of kind ``judge`` (params ``judge_of``: the run, ``model``): it has
progress, can be cancelled with ``llmbus batch cancel``, and every prompt and verdict is
in the audit trail. Starting again resumes: while a judging of the run and model is still
running nothing is sent (the command follows it); once it ended, only pairs never judged
or whose judging was cancelled or expired go into a new judge batch. Each pair is shown to
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
from llmbus.store.batch_store import BatchStatus, BatchStore, new_batch_id
from llmbus.store.replay_query import ReplayQuery

INSTRUCTIONS = (
    "You compare two answers, A and B, to the same conversation. Decide which answer is "
    "better: more correct, more helpful and better suited to the request. Answer 'tie' "
    "when neither is better. Reply with JSON: better (A, B or tie) and a one-line reason."
)

CLIP_CHARS = 1500
"""Each text (conversation, answer A, answer B) is cut to this many characters: three of
them with the instructions fit a 2,048-token context at about 4 characters per token
(English prose). Denser text (code, CJK) can still overflow a small judge's context: such
a pair's judging fails as too long, is reported unjudged and is not sent again."""

MAX_TOKENS = 96
"""Enough for the verdict and a reason of at most 160 characters (``JUDGE_SCHEMA``)."""


RESENT = frozenset({"cancelled", "deadline_exceeded"})
"""Error codes of a judge request that a new judging sends again: it never ran to an
answer. Any other failure (a prompt too long for the judge, say) would fail again, and an
answer that is not a verdict would most likely be one again: those pairs are reported as
unjudged instead of being sent on every resume."""


@dataclass(frozen=True)
class JudgeState:
    verdicts: dict[str, Verdict]
    """By replay request id: the first verdict each pair got."""
    failed: dict[str, str]
    """Pairs whose judging failed for good, with why."""
    running: list[str]
    """Judge batches of the run and model not finished yet (publishing, in progress or
    cancelling): until they end, which of their pairs are answered is not known."""
    sent: set[str]
    """Pairs of judge requests that ran, or may still run, to an answer."""


@dataclass(frozen=True)
class JudgeProgress:
    state: JudgeState
    started: str | None
    """The judge batch started now, if any pair needed judging."""
    sent: int

    @property
    def judge_ids(self) -> list[str]:
        """The judge batches to follow to their end."""
        return [*self.state.running, *([self.started] if self.started else [])]


class ReplayJudge:
    def __init__(self, query: ReplayQuery, store: BatchStore) -> None:
        self._query = query
        self._store = store

    async def state(self, run_id: str, model: str) -> JudgeState:
        verdicts: dict[str, Verdict] = {}
        failed: dict[str, str] = {}
        running: list[str] = []
        sent: set[str] = set()
        for judge in await self._query.judge_runs(run_id):
            if judge["params"].get("model") != model:
                continue
            status = await self._store.status(judge["batch_id"])
            if status.finished_at is None and not _abandoned(status):
                running.append(judge["batch_id"])
            for row in await self._query.judge_answers(judge["batch_id"]):
                pair = row["metadata"].get("pair")
                if pair is None or row["error_code"] in RESENT:
                    continue
                sent.add(pair)
                if row["status"] is None or pair in verdicts:
                    continue
                verdict = parse_verdict(row["output"], row["metadata"].get("first", ""))
                if verdict is not None:
                    verdicts[pair] = verdict
                    failed.pop(pair, None)
                else:
                    failed[pair] = row["error_code"] or "the answer was not a verdict"
        return JudgeState(verdicts, failed, running, sent)

    async def latest_model(self, run_id: str) -> str | None:
        """The model of the run's most recent judging, for a report asked without one."""
        runs = await self._query.judge_runs(run_id)
        return str(runs[-1]["params"]["model"]) if runs else None

    async def start(
        self,
        run: dict[str, Any],
        pairs: list[Pair],
        model: str,
        jobs: BatchJobs,
        *,
        on_acked: Callable[[int], None] | None = None,
    ) -> JudgeProgress:
        """Send the compared pairs that were never judged, or whose judging was cancelled
        or expired, in a new judge batch. While a judging of this run and model is still
        running nothing is sent: its requests reach the audit trail (where this looks) only
        as they are answered, so which of its pairs are covered is not known until then."""
        state = await self.state(run["batch_id"], model)
        if state.running:
            return JudgeProgress(state, None, 0)
        todo = [p for p in pairs if p.state == "compared" and p.request_id not in state.sent]
        if not todo:
            return JudgeProgress(state, None, 0)
        judge_id = new_batch_id("judge")
        now = datetime.now(UTC)
        reply_to = await jobs.reply_to(judge_id)
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
        await jobs.enqueue(
            judge_id,
            requests,
            kind="judge",
            tenant_id=run.get("tenant_id"),
            user_id=None,
            source=None,
            params={"judge_of": run["batch_id"], "model": model},
            on_acked=on_acked,
        )
        return JudgeProgress(state, judge_id, len(requests))


PUBLISH_GIVE_UP = timedelta(minutes=10)
"""A judging still "publishing" this long after it was made lost its publisher (a killed
command; an interrupted one marks itself failed): publishing a judging takes seconds to a
minute, so it is not waited for, and a day (its window) is too long to block judging."""


def _abandoned(status: BatchStatus) -> bool:
    age = datetime.now(UTC) - status.created_at
    return status.status == "publishing" and age > PUBLISH_GIVE_UP


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
                        f"Conversation:\n{_clip(pair.prompt, tail=True)}\n\n"
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


def _clip(text: str, *, tail: bool = False) -> str:
    """At most CLIP_CHARS: an answer's start, a conversation's end (the turn answered)."""
    if len(text) <= CLIP_CHARS:
        return text
    return "…" + text[1 - CLIP_CHARS :] if tail else text[: CLIP_CHARS - 1] + "…"
