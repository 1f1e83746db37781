"""``ReplayQuery``: what a replay report reads: the run, each replayed request beside its
original, and the judge's verdicts.

A run's own requests are found by ``batch_id`` within days of the run (``near_batch``), so
only those days' partitions are read. Each original is probed by its id in every daily
partition up to the run (its index there): originals may be of any age, and a replay does
not record the day of its original.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.sql.expression import ColumnElement, FromClause

from llmbus.store.database import Database, mapped
from llmbus.store.tables import batches, near_batch, requests, results, same_request

_RESULT_FIELDS = (
    "status",
    "output",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "queue_ms",
    "ttft_ms",
    "total_ms",
    "error_code",
    "error_message",
)


def _labelled(table: FromClause, names: Sequence[str], prefix: str) -> list[ColumnElement[Any]]:
    return [table.c[name].label(f"{prefix}{name}") for name in names]


class ReplayQuery:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def _rows(self, query: Select[Any]) -> list[dict[str, Any]]:
        async def op() -> list[dict[str, Any]]:
            async with self._db.engine.connect() as conn:
                return [dict(row._mapping) for row in await conn.execute(query)]

        return await mapped(op)

    async def run(self, run_id: str) -> dict[str, Any] | None:
        """The run's own row (kind, creation time, total, the filter and settings it
        recorded), or None for an unknown id."""
        found = await self._rows(select(batches).where(batches.c.batch_id == run_id))
        return found[0] if found else None

    async def pairs(self, run_id: str) -> list[dict[str, Any]]:
        """Each request of the run beside its original: the replay's fields unprefixed,
        the original's prefixed ``original_``; result fields are None while unanswered."""
        nq, nr = requests.alias("nq"), results.alias("nr")
        oq, orr = requests.alias("oq"), results.alias("orr")
        q_near, r_near = near_batch(run_id, nq.c.created_at, nr.c.created_at)
        query = (
            select(
                nq.c.request_id,
                nq.c.replay_of,
                nq.c.tenant_id,
                nq.c.model,
                nq.c.params,
                nq.c.messages,
                nq.c.created_at,
                *_labelled(nr, _RESULT_FIELDS, ""),
                oq.c.model.label("original_model"),
                oq.c.params.label("original_params"),
                oq.c.created_at.label("original_created_at"),
                *_labelled(orr, _RESULT_FIELDS, "original_"),
            )
            .select_from(
                nq.outerjoin(nr, same_request(nr, nq) & r_near)
                # An original precedes its replay: partitions after the run are not probed.
                .outerjoin(
                    oq,
                    (oq.c.request_id == nq.c.replay_of) & (oq.c.created_at <= nq.c.created_at),
                )
                .outerjoin(orr, same_request(orr, oq))
            )
            .where(nq.c.batch_id == run_id, q_near)
            .order_by(nq.c.created_at, nq.c.request_id)
        )
        return await self._rows(query)

    async def judge_runs(self, run_id: str) -> list[dict[str, Any]]:
        """The judge batches of a run, oldest first."""
        query = (
            select(batches)
            .where(batches.c.kind == "judge", batches.c.params["judge_of"].astext == run_id)
            .order_by(batches.c.created_at)
        )
        return await self._rows(query)

    async def judge_answers(self, judge_id: str) -> list[dict[str, Any]]:
        """Each request of a judge batch: which pair it judged and in which order
        (its metadata), and the judge's answer once there."""
        jq, jr = requests.alias("jq"), results.alias("jr")
        q_near, r_near = near_batch(judge_id, jq.c.created_at, jr.c.created_at)
        query = (
            select(
                jq.c.request_id,
                jq.c.metadata,
                jq.c.model,
                jr.c.status,
                jr.c.output,
                jr.c.error_code,
            )
            .select_from(jq.outerjoin(jr, same_request(jr, jq) & r_near))
            .where(jq.c.batch_id == judge_id, q_near)
        )
        return await self._rows(query)
