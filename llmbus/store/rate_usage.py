"""``RateUsage``: requests and tokens per key and minute, shared by every gateway replica.

A sliding-window counter: at time t the last 60 s hold the current minute's count plus the
previous minute's count weighted by the share of that minute still inside the window. It
keeps two rows per key, and errs only where the previous minute's traffic was uneven: it
spreads a burst evenly over its minute, so after a burst that fills a whole minute's limit
the key waits up to 90 s rather than 60 (``retry_after_s`` says exactly how long). One
admission is one call of ``llmbus.rate_admit`` (migration 0007), whose statement holds a
per-key advisory lock, so two replicas never both take the last slot.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from sqlalchemy import delete, text

from llmbus.errors import DatabaseUnavailableError
from llmbus.store.database import Database, mapped
from llmbus.store.tables import rate_usage

MINUTE_S = 60.0

_ADMIT = text("SELECT * FROM llmbus.rate_admit(:subject, :minute, :weight, :tokens, :rpm, :tpm)")
"""Lock, read both minutes, decide, count (migration 0007)."""


@dataclass(frozen=True)
class RateRefusal:
    what: str
    """``requests`` or ``tokens``."""
    limit: int
    retry_after_s: float


class RateUsage:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._swept_minute = 0

    async def admit(
        self, subject: str, tokens: int, *, rpm: int, tpm: int, now: float | None = None
    ) -> RateRefusal | None:
        """Count one request of ``tokens`` tokens against the key's limits, or say why not
        (nothing is counted then). Raises DatabaseUnavailableError."""
        if len(subject) > 160:  # the column's width; a long JWT subject is kept by digest
            subject = "sha256:" + hashlib.sha256(subject.encode()).hexdigest()
        now = time.time() if now is None else now
        minute = int(now // MINUTE_S)
        # How much of the previous minute is still inside the last 60 s.
        weight = 1.0 - (now - minute * MINUTE_S) / MINUTE_S
        args = {
            "subject": subject,
            "minute": minute,
            "weight": weight,
            "tokens": tokens,
            "rpm": rpm,
            "tpm": tpm,
        }

        async def op() -> RateRefusal | None:
            # Outside a transaction: the function's one statement is its own, so it holds
            # the key's advisory lock from its read to its count (a transaction took five
            # exchanges: begin, lock, read, count, commit).
            async with self._db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                counts = (await conn.execute(_ADMIT, args)).one()
            if counts.admitted:
                return None
            refusal = _refusal(
                "requests", counts.prev_requests, counts.cur_requests, 1, rpm, weight
            ) or _refusal("tokens", counts.prev_tokens, counts.cur_tokens, tokens, tpm, weight)
            # Both sides sum the same float8 terms in the same order. Should rounding ever
            # make them disagree, PostgreSQL's refusal stands (nothing was counted).
            return refusal or RateRefusal("requests", rpm, 1.0)

        refusal = await mapped(op)
        if minute != self._swept_minute:
            await self._sweep(minute)
        return refusal

    async def _sweep(self, minute: int) -> None:
        """Drop minutes no window reaches any more (once a minute per replica)."""
        self._swept_minute = minute

        async def op() -> None:
            async with self._db.engine.begin() as conn:
                await conn.execute(delete(rate_usage).where(rate_usage.c.minute < minute - 1))

        try:
            await mapped(op)
        except DatabaseUnavailableError:
            self._swept_minute = 0  # try again next time


def _refusal(
    what: str, prev: int, cur: int, need: int, limit: int, weight: float
) -> RateRefusal | None:
    if prev * weight + cur + need <= limit:
        return None
    if cur + need <= limit and prev > 0:
        # Fits once enough of the previous minute has slid out of the window.
        fits_at = (limit - cur - need) / prev
        wait_s = (weight - fits_at) * MINUTE_S
    else:
        # The current minute alone is full: wait for it to end and partly slide out too.
        fits_at = (limit - need) / cur if cur else 1.0
        wait_s = weight * MINUTE_S + (1.0 - max(0.0, fits_at)) * MINUTE_S
    return RateRefusal(what, limit, max(0.0, wait_s))
