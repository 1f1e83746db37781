"""``BatchJobs``: submit an OpenAI Batch file, follow it, fetch its results, cancel it.

Submission order: every line is validated first (nothing is published from a file with
invalid lines unless asked to skip them); then the batch is recorded in PostgreSQL; then
its requests are published and acknowledged; then a ``published`` event is recorded. A
publish that fails records ``publish_failed`` (the batch is ``failed``) and cancels what
was sent. A batch stuck in ``publishing`` was killed mid-publish (it reads ``failed`` once
its window is over): cancel it and submit the file again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llmbus.errors import BatchInputError, LlmbusError
from llmbus.producers.batch_publisher import BatchPublisher
from llmbus.schemas import ChatRequest, Priority, ReplyTo
from llmbus.schemas.batch_input import (
    ParsedBatch,
    for_the_bus,
    output_line,
    parse_batch_lines,
)
from llmbus.store.batch_store import BatchStatus, BatchStore, new_batch_id

_POLL_S = 1.0
"""How often ``wait`` re-reads progress at most: the auditor flushes every 0.5 s anyway."""

_POLL_SHARE = 0.02
"""The most of one core's time ``wait``'s reads may take. A status read counts the batch's
result rows (about 7 ms per 1,000 on 2 cores, 2026-11-29), and the engine may share the
machine: read ten times a second, a 10,000-line batch's status took a fifth of a core from
it. Larger batches are re-read less often, in proportion to what a read took (its wall
time standing in for the database's CPU)."""

_POLL_MAX_S = 30.0
"""Longest gap between reads: a finished (or cancelled) batch is noticed within half a
minute, however large it is or however slow one read happened to be."""


def poll_interval_s(read_s: float) -> float:
    """Seconds ``wait`` sleeps after a status read that took ``read_s``."""
    return min(_POLL_MAX_S, max(_POLL_S, read_s / _POLL_SHARE))


@dataclass(frozen=True)
class SubmitOptions:
    model: str | None = None
    priority: Priority = Priority.LOW
    tenant_id: str | None = None
    user_id: str | None = None
    skip_invalid: bool = False
    completion_window: timedelta = timedelta(hours=24)
    """Requests not started within this window end as ``deadline_exceeded``."""
    endpoint: str | None = None
    """The one endpoint every line must name (OpenAI's batches have one); None: any."""


@dataclass(frozen=True)
class Submitted:
    batch_id: str
    total: int
    skipped: ParsedBatch


class BatchJobs:
    def __init__(self, store: BatchStore, publisher: BatchPublisher) -> None:
        self._store = store
        self._publisher = publisher

    async def submit(
        self,
        path: Path,
        options: SubmitOptions,
        on_acked: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> Submitted:
        with path.open("rb") as fh:
            return await self.submit_lines(fh, path.name, options, on_acked, on_total)

    async def submit_lines(
        self,
        lines: Iterable[bytes],
        source: str,
        options: SubmitOptions,
        on_acked: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> Submitted:
        parsed = parse_batch_lines(lines, model=options.model, url=options.endpoint)
        if parsed.error_count and not options.skip_invalid:
            raise BatchInputError(
                f"{parsed.error_count} invalid line(s) in {source}; nothing was enqueued",
                [str(e) for e in parsed.errors],
            )
        if not parsed.lines:
            raise BatchInputError(f"no requests in {source}", [])
        batch_id = new_batch_id()
        if on_total:
            on_total(len(parsed.lines))
        reply_to = await self.reply_to(batch_id)
        now = datetime.now(UTC)
        requests = []
        for number, line in parsed.lines:
            body, restore = for_the_bus(line.body)
            requests.append(
                ChatRequest(
                    request_id=f"{batch_id}-{number}",
                    created_at=now,
                    reply_to=reply_to,
                    priority=options.priority,
                    deadline=now + options.completion_window,
                    tenant_id=options.tenant_id,
                    user_id=options.user_id,
                    batch_id=batch_id,
                    metadata={"custom_id": line.custom_id, "line": str(number), **restore},
                    body=body,
                )
            )
        await self.enqueue(
            batch_id,
            requests,
            kind="batch",
            tenant_id=options.tenant_id,
            user_id=options.user_id,
            source=source,
            params={
                "priority": options.priority.value,
                "skipped_lines": parsed.error_count,
                "endpoint": options.endpoint,
            },
            on_acked=on_acked,
        )
        return Submitted(batch_id, len(requests), parsed)

    async def reply_to(self, batch_id: str) -> ReplyTo:
        return await self._publisher.reply_to(batch_id)

    async def enqueue(
        self,
        batch_id: str,
        requests: list[ChatRequest],
        *,
        kind: str,
        tenant_id: str | None,
        user_id: str | None,
        source: str | None,
        params: dict[str, Any],
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        """Record the batch, publish its requests, then mark it published (the order in
        this module's docstring). Batch jobs and replay runs both come through here. When
        publishing fails or is interrupted the batch is marked failed (best effort: the
        database may be what failed) and what was published is cancelled."""
        deadlines = [r.deadline for r in requests if r.deadline is not None]
        if deadlines:
            params = {**params, "expires_at": max(deadlines).isoformat()}
        await self._store.create(
            batch_id,
            kind=kind,
            model=",".join(sorted({r.body.model for r in requests})),
            total=len(requests),
            tenant_id=tenant_id,
            user_id=user_id,
            source=source,
            params=params,
        )
        try:
            await self._publisher.publish(requests, on_acked)
        except BaseException:
            # Ctrl-C too: a batch left "publishing" would read as running until its window
            # ends (a day), and a judging would wait for it that long.
            with contextlib.suppress(LlmbusError):
                await self._store.add_event(batch_id, "publish_failed")
                await self._publisher.cancel(batch_id)
            raise
        await self._store.add_event(batch_id, "published")

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Queued requests are skipped and running ones aborted by the workers; the
        status reads ``cancelling`` until every request has its final. A finished batch
        has nothing left to cancel and is returned as it is."""
        status = await self._store.status(batch_id)  # NotFoundError for an unknown id
        if status.finished_at is not None:
            return status
        await self._store.add_event(batch_id, "cancel_requested")
        await self._publisher.cancel(batch_id)
        return await self._store.status(batch_id)

    async def wait(
        self, batch_id: str, on_progress: Callable[[BatchStatus], None] | None = None
    ) -> BatchStatus:
        while True:
            began = time.monotonic()
            status = await self._store.status(batch_id)
            read_s = time.monotonic() - began
            if on_progress:
                on_progress(status)
            if status.finished_at is not None:
                return status
            await asyncio.sleep(poll_interval_s(read_s))

    async def output_lines(self, batch_id: str) -> AsyncIterator[tuple[bool, dict[str, Any]]]:
        """(succeeded, OpenAI Batch output line) for each finished request, in input order
        (for an expired batch, each request: the unfinished ones as ``batch_expired``)."""
        status = await self._store.status(batch_id)  # NotFoundError for an unknown id
        async for row in self._store.results(batch_id, expired=status.status == "expired"):
            ok = row["status"] == "ok"
            yield (
                ok,
                output_line(
                    request_id=row["request_id"],
                    custom_id=row["custom_id"] or "",
                    completion=row["completion"] if ok else None,
                    error_code=row["error_code"],
                    error_message=row["error_message"],
                    encoding_format=row["encoding_format"],
                ),
            )

    async def write_results(
        self, batch_id: str, out: Path | None, errors: Path | None
    ) -> tuple[int, int]:
        """Successes to ``out``, failures to ``errors`` (or to ``out`` when no errors file
        is given). Returns (results, errors) written."""
        counts = {True: 0, False: 0}
        with contextlib.ExitStack() as files:
            handles: dict[Path, Any] = {
                path: files.enter_context(path.open("w", encoding="utf-8"))
                for path in {p for p in (out, errors) if p is not None}
            }
            async for ok, line in self.output_lines(batch_id):
                target = out if ok or errors is None else errors
                if target is not None:
                    handles[target].write(json.dumps(line, ensure_ascii=False) + "\n")
                counts[ok] += 1
        return counts[True], counts[False]
