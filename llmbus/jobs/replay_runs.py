"""``ReplayRuns``: logged conversations sent again, to another model or setting.

A replay run is a batch of kind ``replay`` (so it has progress and can be cancelled like
any batch); each of its requests names its original in ``replay_of``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from llmbus.jobs.batch_jobs import BatchJobs
from llmbus.schemas import (
    ChatCompletionRequest,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    Priority,
)
from llmbus.store.batch_store import new_batch_id
from llmbus.store.conversation_query import ConversationFilter, ConversationQuery

MAX_REPLAY = 50_000
"""The same bound as one batch job: a replay larger than this is split by time range."""


@dataclass(frozen=True)
class ReplayOptions:
    model: str | None = None
    """Target model; None replays each conversation against its original model."""
    overrides: dict[str, Any] | None = None
    """Sampling parameters replacing the originals' (temperature, top_p, max_tokens, seed)."""
    priority: Priority = Priority.LOW
    completion_window: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class ReplayStarted:
    run_id: str | None
    """None for a dry run; a run of 0 requests when the selection matched nothing."""
    count: int


class ReplayRuns:
    def __init__(self, query: ConversationQuery, jobs: BatchJobs) -> None:
        self._query = query
        self._jobs = jobs

    async def start(
        self,
        selection: ConversationFilter,
        options: ReplayOptions,
        *,
        dry_run: bool = False,
        on_acked: Callable[[int], None] | None = None,
    ) -> ReplayStarted:
        capped = ConversationFilter(
            **{**selection.__dict__, "limit": selection.limit or MAX_REPLAY}
        )
        if dry_run:
            return ReplayStarted(None, await self._query.count(capped))
        originals = await self._query.fetch(capped)
        # An empty selection is still recorded as a run (with its filter), so the analyst
        # gets a report that says nothing matched rather than an id that does not exist.
        run_id = new_batch_id("replay")
        now = datetime.now(UTC)
        reply_to = await self._jobs.reply_to(run_id)
        requests = [
            ChatRequest(
                request_id=f"{run_id}-{n}",
                created_at=now,
                reply_to=reply_to,
                priority=options.priority,
                deadline=now + options.completion_window,
                tenant_id=row["tenant_id"],
                user_id=row["user_id"],
                batch_id=run_id,
                replay_of=row["request_id"],
                metadata={"line": str(n)},
                body=_replayed_body(row, options),
            )
            for n, row in enumerate(originals, start=1)
        ]
        await self._jobs.enqueue(
            run_id,
            requests,
            kind="replay",
            tenant_id=selection.tenant_id,
            user_id=None,
            source=None,
            params={
                "target_model": options.model,
                "overrides": options.overrides or {},
                "filter": _describe(selection),
            },
            on_acked=on_acked,
        )
        return ReplayStarted(run_id, len(requests))


def _replayed_body(
    row: dict[str, Any], options: ReplayOptions
) -> ChatCompletionRequest | CompletionRequest | EmbeddingRequest:
    """The logged body again (tools, response format, sampling and all), with the
    replay's model and overrides. A legacy completion keeps its prompt in params, an
    embeddings request its input."""
    params = {k: v for k, v in row["params"].items() if v is not None}
    overrides = dict(options.overrides or {})
    if "max_tokens" in overrides and "max_completion_tokens" in params:
        # The newer name wins in the engine; the override must land on the one that counts.
        params["max_completion_tokens"] = overrides["max_tokens"]
    params.update(overrides)
    params["model"] = options.model or row["model"]
    if "prompt" in params:
        return CompletionRequest.model_validate(params)
    if "input" in params:
        return EmbeddingRequest.model_validate(params)
    return ChatCompletionRequest.model_validate({**params, "messages": row["messages"]})


def _describe(selection: ConversationFilter) -> dict[str, Any]:
    """The filter as JSON, recorded with the run so a report says what was replayed."""
    out: dict[str, Any] = {}
    for key, value in selection.__dict__.items():
        if value in (None, (), [], False):
            continue
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    if "request_ids" in out:
        out["request_ids"] = list(out["request_ids"])
    return out
