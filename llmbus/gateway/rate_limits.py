"""Per-key limits on requests and tokens per minute.

Limits are shared by every gateway replica through PostgreSQL (``store/rate_usage.py``).
While PostgreSQL is unreachable or slow, each replica falls back to its own sliding
window, which it keeps up to date all along, so with N replicas a key may get up to N times
its limit until the database is back. Tokens are counted before the call from the prompt
size and max_tokens, so a burst cannot overshoot while its answers are still generating.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque

from llmbus.errors import DatabaseUnavailableError
from llmbus.gateway.openai_errors import GatewayError
from llmbus.store.rate_usage import RateUsage

WINDOW_S = 60.0

_SHARED_TIMEOUT_S = 2.0
"""The most a call waits for the shared count; slower than that, this replica decides."""

_SHARED_RETRY_S = 5.0
"""After PostgreSQL failed, how long this replica limits on its own before asking again,
so an outage does not add a connection timeout to every call."""

log = logging.getLogger(__name__)


class _Window:
    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - WINDOW_S:
            self.total -= self.events.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.events.append((now, amount))
        self.total += amount

    def retry_after(self, now: float, need: int, limit: int) -> float:
        """Seconds until ``need`` more fits under ``limit``."""
        freed = self.total
        for at, amount in self.events:
            freed -= amount
            if freed + need <= limit:
                return max(0.0, at + WINDOW_S - now)
        return WINDOW_S


class LocalRateLimiter:
    """This process's own sliding one-minute windows."""

    def __init__(self) -> None:
        self._requests: dict[str, _Window] = {}
        self._tokens: dict[str, _Window] = {}

    def admit(self, subject: str, tokens: int, *, rpm: int, tpm: int, check: bool = True) -> None:
        """Count one request; with ``check``, raise a 429 instead when over a limit."""
        now = time.monotonic()
        reqs = self._requests.setdefault(subject, _Window())
        toks = self._tokens.setdefault(subject, _Window())
        reqs.trim(now)
        toks.trim(now)
        if check and reqs.total + 1 > rpm:
            raise _limited("requests", rpm, reqs.retry_after(now, 1, rpm))
        if check and toks.total + tokens > tpm:
            raise _limited("tokens", tpm, toks.retry_after(now, tokens, tpm))
        reqs.add(now, 1)
        toks.add(now, tokens)


class RateLimiter:
    def __init__(
        self, *, default_rpm: int, default_tpm: int, shared: RateUsage | None = None
    ) -> None:
        self._default_rpm = default_rpm
        self._default_tpm = default_tpm
        self._shared = shared
        self._local = LocalRateLimiter()
        self._shared_again_at = 0.0

    async def admit(self, subject: str, tokens: int, *, rpm: int | None, tpm: int | None) -> None:
        """Count one request of ``tokens`` tokens, or raise a 429 with Retry-After."""
        rpm = rpm or self._default_rpm
        tpm = tpm or self._default_tpm
        if tokens > tpm:
            raise GatewayError(
                429, "rate_limit_exceeded",
                f"this request needs ~{tokens} tokens; the key's limit is {tpm} per minute",
            )  # fmt: skip
        if self._shared is not None and time.monotonic() >= self._shared_again_at:
            try:
                async with asyncio.timeout(_SHARED_TIMEOUT_S):
                    refusal = await self._shared.admit(subject, tokens, rpm=rpm, tpm=tpm)
            except (DatabaseUnavailableError, TimeoutError) as exc:
                log.warning("shared rate limits unavailable (%r); limiting in this replica", exc)
                self._shared_again_at = time.monotonic() + _SHARED_RETRY_S
            else:
                if refusal is not None:
                    raise _limited(refusal.what, refusal.limit, refusal.retry_after_s)
                self._local.admit(subject, tokens, rpm=rpm, tpm=tpm, check=False)
                return
        self._local.admit(subject, tokens, rpm=rpm, tpm=tpm)


def _limited(what: str, limit: int, wait_s: float) -> GatewayError:
    seconds = max(1, math.ceil(wait_s))
    return GatewayError(
        429,
        "rate_limit_exceeded",
        f"limit of {limit} {what} per minute reached; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )
