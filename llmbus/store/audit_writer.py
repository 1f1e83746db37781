"""``AuditWriter``: bulk, idempotent inserts of requests and finals into the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert

from llmbus.schemas import ChatRequest, ChatResult, Choice, EmbeddingList, ErrorReply
from llmbus.store.database import Database, mapped
from llmbus.store.tables import requests, results


def request_row(req: ChatRequest, topic: str, partition: int, offset: int) -> dict[str, Any]:
    body = req.body
    return {
        "request_id": req.request_id,
        "created_at": req.created_at,
        "logged_at": datetime.now(UTC),
        "model": body.model,
        # Legacy completions keep their prompt in params ("prompt") and no messages.
        "messages": [m.model_dump(exclude_none=True) for m in getattr(body, "messages", ())],
        "params": body.model_dump(mode="json", exclude={"messages", "model"}, exclude_none=True),
        "priority": req.priority.value,
        "deadline": req.deadline,
        "tenant_id": req.tenant_id,
        "user_id": req.user_id,
        "batch_id": req.batch_id,
        "replay_of": req.replay_of,
        # The conversation a turn belongs to, for analysts (no column of its own).
        "metadata": (
            {**req.metadata, "conversation_id": req.conversation_id}
            if req.conversation_id
            else req.metadata
        ),
        "stream": str(req.stream).lower(),
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
    }


def result_row(final: ChatResult | ErrorReply, *, store_vectors: bool = False) -> dict[str, Any]:
    """The final's row. Embedding vectors are kept only with ``store_vectors`` or for a
    batch's request (its output file is made from them); otherwise each is replaced by
    its length, and inputs, model, dimensions and usage stay."""
    now = datetime.now(UTC)
    if isinstance(final, ErrorReply):
        return {
            "request_id": final.request_id,
            "status": "error",
            "finished_at": final.finished_at,
            "logged_at": now,
            "model": None,
            "output": None,
            "finish_reason": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "queue_ms": None,
            "ttft_ms": None,
            "total_ms": None,
            "worker_id": final.worker_id,
            "error_code": final.code,
            "error_message": final.message,
            "completion": None,
        }
    c = final.completion
    if isinstance(c, EmbeddingList):
        keep = store_vectors or final.batch_id is not None
        output, finish_reason = None, None
        completion = c.model_dump(mode="json") if keep else c.without_vectors()
    else:
        choice = c.choices[0]
        output = choice.message.content if isinstance(choice, Choice) else choice.text
        finish_reason = choice.finish_reason
        completion = c.model_dump(mode="json")
    return {
        "request_id": final.request_id,
        "status": "ok",
        "finished_at": final.finished_at,
        "logged_at": now,
        "model": c.model,
        "output": output,
        "finish_reason": finish_reason,
        "prompt_tokens": c.usage.prompt_tokens,
        "completion_tokens": c.usage.completion_tokens,
        "queue_ms": final.timings.queue_ms,
        "ttft_ms": final.timings.ttft_ms,
        "total_ms": final.timings.total_ms,
        "worker_id": final.worker_id,
        "error_code": None,
        "error_message": None,
        "completion": completion,
    }


class AuditWriter:
    """Writes one batch per transaction. ``ON CONFLICT DO NOTHING`` on the request id makes
    a redelivered batch harmless: the trail keeps exactly one row per request and per final
    (the first final wins)."""

    def __init__(self, url: str) -> None:
        self._db = Database(url, pool_size=2)

    async def start(self) -> None:
        await self._db.start()

    async def stop(self) -> None:
        await self._db.stop()

    async def write(
        self, request_rows: list[dict[str, Any]], result_rows: list[dict[str, Any]]
    ) -> None:
        """Raises DatabaseUnavailableError when the database is away (caller retries)."""
        engine = self._db.engine  # NotStartedError before start()

        async def op() -> None:
            async with engine.begin() as conn:
                if request_rows:
                    await conn.execute(
                        insert(requests).on_conflict_do_nothing(index_elements=["request_id"]),
                        _dedupe(request_rows),
                    )
                if result_rows:
                    await conn.execute(
                        insert(results).on_conflict_do_nothing(index_elements=["request_id"]),
                        _dedupe(result_rows),
                    )

        await mapped(op)


def _dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the first row per request id within one batch."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row["request_id"], row)
    return list(seen.values())
