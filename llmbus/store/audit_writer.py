"""``AuditWriter``: bulk, idempotent inserts of requests and finals into the audit trail,
with the daily usage aggregates counted in the same transaction."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llmbus.store.audit_partitions import PartitionCalendar, day_of, today
from llmbus.store.bulk_insert import JSONB, BulkInsert
from llmbus.store.database import Database, mapped

REQUESTS = BulkInsert(
    "llmbus.requests",
    [
        ("request_id", "varchar"), ("created_at", "timestamptz"), ("logged_at", "timestamptz"),
        ("model", "varchar"), ("messages", JSONB), ("params", JSONB), ("priority", "varchar"),
        ("deadline", "timestamptz"), ("tenant_id", "varchar"), ("user_id", "varchar"),
        ("batch_id", "varchar"), ("replay_of", "varchar"), ("metadata", JSONB),
        ("stream", "varchar"), ("kafka_topic", "varchar"), ("kafka_partition", "integer"),
        ("kafka_offset", "bigint"),
    ],
    conflict=("request_id", "created_at"),
    returning=("request_id",),
)  # fmt: skip
RESULTS = BulkInsert(
    "llmbus.results",
    [
        ("request_id", "varchar"), ("created_at", "timestamptz"), ("status", "varchar"),
        ("finished_at", "timestamptz"), ("logged_at", "timestamptz"), ("model", "varchar"),
        ("output", "text"), ("finish_reason", "varchar"), ("prompt_tokens", "integer"),
        ("completion_tokens", "integer"), ("queue_ms", "float8"), ("ttft_ms", "float8"),
        ("total_ms", "float8"), ("worker_id", "varchar"), ("error_code", "varchar"),
        ("error_message", "text"), ("completion", JSONB),
    ],
    conflict=("request_id", "created_at"),
    returning=("request_id",),
)  # fmt: skip
USAGE = text(
    "INSERT INTO llmbus.usage_daily SELECT * FROM unnest(CAST(:day AS date[]), "
    "CAST(:tenant AS varchar[]), CAST(:user AS varchar[]), CAST(:model AS varchar[]), "
    "CAST(:lane AS varchar[]), CAST(:requests AS bigint[]), CAST(:errors AS bigint[]), "
    "CAST(:prompt AS bigint[]), CAST(:completion AS bigint[])) "
    "ON CONFLICT (day, tenant_id, user_id, model, lane) DO UPDATE SET "
    "requests = usage_daily.requests + excluded.requests, "
    "errors = usage_daily.errors + excluded.errors, "
    "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens"
)
A = TypeVar("A")
B = TypeVar("B")
_NO_PARTITION = "23514"
"""SQLSTATE of a row for which no partition exists (check_violation)."""


@dataclass(frozen=True)
class Stored:
    """What one write added: rows inserted (a redelivered row is not), and the tokens of
    the inserted finals by (tenant, model, kind), for the tokens-by-tenant metric."""

    requests: int
    results: int
    tokens: Counter[tuple[str, str, str]]


class AuditWriter:
    """Writes a batch as two transactions run at once, its requests and its finals.
    ``ON CONFLICT DO NOTHING`` on (request id, created at) makes a redelivered batch
    harmless: the trail keeps exactly one row per request and per final (the first final
    wins), and only finals actually inserted are counted in ``usage_daily``."""

    def __init__(self, url: str) -> None:
        # The auditor keeps three writes in flight, each on two connections.
        self._db = Database(url, pool_size=6)
        self._calendar = PartitionCalendar()

    async def start(self) -> None:
        await self._db.start()

    async def stop(self) -> None:
        await self._db.stop()

    async def ensure_ahead(self, days: int) -> None:
        """Make today's partitions and those of the next ``days - 1`` days."""
        await mapped(lambda: self._calendar.ensure(self._db.engine, [today()], count=days))

    async def write(
        self, request_rows: Sequence[dict[str, Any]], result_rows: Sequence[dict[str, Any]]
    ) -> Stored:
        """Raises DatabaseUnavailableError when the database is away (caller retries)."""
        engine = self._db.engine  # NotStartedError before start()
        requests = _dedupe(request_rows)
        results = _dedupe(result_rows)

        async def op() -> Stored:
            if any(r["created_at"] is None for r in results):
                async with engine.connect() as conn:
                    await _date_legacy_finals(conn, results, requests)
            days = {day_of(r["created_at"]) for r in [*requests, *results]}
            await self._calendar.ensure(engine, days)
            # Requests and finals in two transactions at once: on two connections the
            # database works on both (index upkeep is most of an insert's cost) while this
            # process waits. Each is idempotent on its own; the caller retries the pair.
            inserted, counted = await _both(
                _insert_requests(engine, requests), _insert_results(engine, results)
            )
            return Stored(inserted, len(counted), _tokens(counted))

        try:
            return await mapped(op)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _NO_PARTITION:
                raise
            # A partition this process made was dropped since (retention): make it again.
            self._calendar.forget()
            return await mapped(op)


async def _insert_requests(engine: AsyncEngine, rows: list[dict[str, Any]]) -> int:
    async with engine.begin() as conn:
        return len(await REQUESTS.run(conn, rows))


async def _insert_results(engine: AsyncEngine, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The finals actually inserted, counted in ``usage_daily`` in the same transaction."""
    async with engine.begin() as conn:
        new = {row.request_id for row in await RESULTS.run(conn, rows)}
        counted = [r for r in rows if r["request_id"] in new]
        await _count_usage(conn, counted)
    return counted


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results; when either fails, its error, once the other one has finished too
    (so that a retry never runs beside a write still in flight)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in (a, b):
        if isinstance(outcome, BaseException):
            raise outcome
    return a, b  # type: ignore[return-value]


async def _date_legacy_finals(
    conn: AsyncConnection, results: list[dict[str, Any]], requests: list[dict[str, Any]]
) -> None:
    """Give finals from older workers (no request facts) their request's creation time and
    usage keys: from the same batch, else from the trail, else the finish time."""
    legacy = {r["request_id"]: r for r in results if r["created_at"] is None}
    if not legacy:
        return
    known = {q["request_id"]: q for q in requests if q["request_id"] in legacy}
    missing = [rid for rid in legacy if rid not in known]
    if missing:
        rows = await conn.execute(
            text(
                "SELECT request_id, created_at, tenant_id, user_id, model, batch_id "
                "FROM llmbus.requests WHERE request_id = ANY(:ids)"
            ),
            {"ids": missing},
        )
        known.update({row.request_id: dict(row._mapping) for row in rows})
    for rid, row in legacy.items():
        request = known.get(rid)
        if request is None:
            row["created_at"] = row["finished_at"]
            continue
        row["created_at"] = request["created_at"]
        row["_tenant_id"], row["_user_id"] = request["tenant_id"], request["user_id"]
        row["_model"] = request["model"]
        row["_lane"] = "interactive" if request["batch_id"] is None else "batch"


def _usage_key(r: dict[str, Any]) -> tuple[date, str, str, str, str]:
    """A final's ``usage_daily`` key: day, tenant, user, model, lane ("" for none)."""
    return (
        day_of(r["created_at"]),
        r["_tenant_id"] or "",
        r["_user_id"] or "",
        r["_model"] or r["model"] or "",
        r["_lane"] or "interactive",
    )


async def _count_usage(conn: AsyncConnection, results: list[dict[str, Any]]) -> None:
    totals: dict[tuple[date, str, str, str, str], list[int]] = {}
    for r in results:
        t = totals.setdefault(_usage_key(r), [0, 0, 0, 0])
        t[0] += 1
        t[1] += r["status"] == "error"
        t[2] += r["prompt_tokens"] or 0
        t[3] += r["completion_tokens"] or 0
    if not totals:
        return
    # In key order: concurrent writes then lock shared rows in the same order, so two
    # batches counting the same tenant's day wait for each other instead of deadlocking.
    keys = sorted(totals)
    sums = [totals[k] for k in keys]
    await conn.execute(
        USAGE,
        {
            "day": [k[0] for k in keys],
            "tenant": [k[1] for k in keys],
            "user": [k[2] for k in keys],
            "model": [k[3] for k in keys],
            "lane": [k[4] for k in keys],
            "requests": [s[0] for s in sums],
            "errors": [s[1] for s in sums],
            "prompt": [s[2] for s in sums],
            "completion": [s[3] for s in sums],
        },
    )


def _tokens(results: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    tokens: Counter[tuple[str, str, str]] = Counter()
    for r in results:
        _, tenant, _, model, _ = _usage_key(r)
        tokens[(tenant, model, "prompt")] += r["prompt_tokens"] or 0
        tokens[(tenant, model, "completion")] += r["completion_tokens"] or 0
    return tokens


def _dedupe(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row per request id within one batch, in request id order (the order in
    which concurrent writes take their rows' locks: the same for all, so no deadlock)."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(row["request_id"], row)
    return [seen[rid] for rid in sorted(seen)]
