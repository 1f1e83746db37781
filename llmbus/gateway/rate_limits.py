"""Per-key limits on requests and tokens per minute (sliding one-minute windows).

Limits are kept in this gateway process: with N gateway replicas a key gets up to N times
its limit. Tokens are counted before the call from the prompt size and max_tokens, so a
burst cannot overshoot while its answers are still being generated.
"""

from __future__ import annotations

import math
import time
from collections import deque

from llmbus.gateway.openai_errors import GatewayError

WINDOW_S = 60.0


class _Window:
    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def trim(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - WINDOW_S:
            self.total -= self.events.popleft()[1]

    def retry_after(self, now: float, need: int, limit: int) -> float:
        """Seconds until ``need`` more fits under ``limit``."""
        freed = self.total
        for at, amount in self.events:
            freed -= amount
            if freed + need <= limit:
                return max(0.0, at + WINDOW_S - now)
        return WINDOW_S


class RateLimiter:
    def __init__(self, *, default_rpm: int, default_tpm: int) -> None:
        self._default_rpm = default_rpm
        self._default_tpm = default_tpm
        self._requests: dict[str, _Window] = {}
        self._tokens: dict[str, _Window] = {}

    def admit(self, subject: str, tokens: int, *, rpm: int | None, tpm: int | None) -> None:
        """Count one request of ``tokens`` tokens, or raise a 429 with Retry-After."""
        now = time.monotonic()
        rpm = rpm or self._default_rpm
        tpm = tpm or self._default_tpm
        reqs = self._requests.setdefault(subject, _Window())
        toks = self._tokens.setdefault(subject, _Window())
        reqs.trim(now)
        toks.trim(now)
        if tokens > tpm:
            raise GatewayError(
                429, "rate_limit_exceeded",
                f"this request needs ~{tokens} tokens; the key's limit is {tpm} per minute",
            )  # fmt: skip
        if reqs.total + 1 > rpm:
            raise _limited("requests", rpm, reqs.retry_after(now, 1, rpm))
        if toks.total + tokens > tpm:
            raise _limited("tokens", tpm, toks.retry_after(now, tokens, tpm))
        reqs.events.append((now, 1))
        reqs.total += 1
        toks.events.append((now, tokens))
        toks.total += tokens


def _limited(what: str, limit: int, wait_s: float) -> GatewayError:
    seconds = max(1, math.ceil(wait_s))
    return GatewayError(
        429,
        "rate_limit_exceeded",
        f"limit of {limit} {what} per minute reached; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )
