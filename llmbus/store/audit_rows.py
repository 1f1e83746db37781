"""Audit rows from wire messages, under the trail's ``RowPolicy``: redaction and content
retention are applied here, the one point every stored prompt and answer passes through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from llmbus.schemas import ChatRequest, ChatResult, Choice, EmbeddingList, ErrorReply
from llmbus.store.redaction import Redactor

CONTENT_PARAMS = ("prompt", "input", "suffix")
"""Request parameters that hold content (legacy completions' prompt and suffix, embedding
inputs); content retention removes them with the messages."""


@dataclass(frozen=True)
class RowPolicy:
    redactor: Redactor | None = None
    content_retention_days: int | None = None
    """A row older than this is stored without its content (it arrived late: the
    maintenance job has already emptied its day)."""
    store_vectors: bool = False
    """Keep interactive requests' embedding vectors (a batch's are always kept)."""

    def keeps_content(self, created_at: datetime) -> bool:
        days = self.content_retention_days
        return days is None or created_at >= datetime.now(UTC) - timedelta(days=days)

    def text(self, value: str | None) -> str | None:
        if value is None or self.redactor is None:
            return value
        return self.redactor.redact(value)

    def json(self, value: Any) -> Any:
        return value if self.redactor is None else self.redactor.redact_json(value)


def request_row(
    req: ChatRequest, topic: str, partition: int, offset: int, policy: RowPolicy
) -> dict[str, Any]:
    body = req.body
    # Legacy completions keep their prompt in params ("prompt") and no messages.
    messages = [m.model_dump(exclude_none=True) for m in getattr(body, "messages", ())]
    params = body.model_dump(mode="json", exclude={"messages", "model"}, exclude_none=True)
    if not policy.keeps_content(req.created_at):
        messages = []
        params = {k: v for k, v in params.items() if k not in CONTENT_PARAMS}
    # The conversation a turn belongs to, for analysts (no column of its own).
    meta = (
        {**req.metadata, "conversation_id": req.conversation_id}
        if req.conversation_id
        else req.metadata
    )
    return {
        "request_id": req.request_id,
        "created_at": req.created_at,
        "logged_at": datetime.now(UTC),
        "model": body.model,
        "messages": policy.json(messages),
        "params": policy.json(params),
        "priority": req.priority.value,
        "deadline": req.deadline,
        "tenant_id": req.tenant_id,
        "user_id": req.user_id,
        "batch_id": req.batch_id,
        "replay_of": req.replay_of,
        "metadata": policy.json(meta),
        "stream": str(req.stream).lower(),
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def result_row(final: ChatResult | ErrorReply, policy: RowPolicy) -> dict[str, Any]:
    """The final's row, with its usage keys (``_tenant_id``, ``_user_id``, ``_model``,
    ``_lane``: not columns; what the daily usage aggregates are keyed by). ``created_at``
    is its request's creation time, None when the final does not say (an older worker's):
    the writer looks it up. Embedding vectors are kept only with ``policy.store_vectors``
    or for a batch's request (its output file is made from them); otherwise each is
    replaced by its length."""
    facts = final.request
    row: dict[str, Any] = {
        "request_id": final.request_id,
        "created_at": facts.created_at if facts else None,
        "finished_at": final.finished_at,
        "logged_at": datetime.now(UTC),
        "worker_id": final.worker_id,
        "_tenant_id": facts.tenant_id if facts else None,
        "_user_id": facts.user_id if facts else None,
        "_model": facts.model if facts else None,
        "_lane": facts.lane if facts else None,
    }
    if isinstance(final, ErrorReply):
        return row | {
            "status": "error",
            "model": None,
            "output": None,
            "finish_reason": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "queue_ms": None,
            "ttft_ms": None,
            "total_ms": None,
            "error_code": final.code,
            "error_message": policy.text(final.message),
            "completion": None,
        }
    c = final.completion
    if isinstance(c, EmbeddingList):
        keep = policy.store_vectors or final.batch_id is not None
        output, finish_reason = None, None
        completion = c.model_dump(mode="json") if keep else c.without_vectors()
    else:
        choice = c.choices[0]
        output = choice.message.content if isinstance(choice, Choice) else choice.text
        finish_reason = choice.finish_reason
        completion = c.model_dump(mode="json")
    kept: dict[str, Any] | None = completion
    if facts is not None and not policy.keeps_content(facts.created_at):
        output, kept = None, None
    return row | {
        "status": "ok",
        "model": c.model,
        "output": policy.text(output),
        "finish_reason": finish_reason,
        "prompt_tokens": c.usage.prompt_tokens,
        "completion_tokens": c.usage.completion_tokens,
        "queue_ms": final.timings.queue_ms,
        "ttft_ms": final.timings.ttft_ms,
        "total_ms": final.timings.total_ms,
        "error_code": None,
        "error_message": None,
        "completion": policy.json(kept),
    }
