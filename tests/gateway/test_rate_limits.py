import pytest

from llmbus.gateway.openai_errors import GatewayError
from llmbus.gateway.rate_limits import RateLimiter
from llmbus.store.database import Database
from llmbus.store.rate_usage import RateUsage


async def test_requests_per_minute_then_429_with_retry_after() -> None:
    limiter = RateLimiter(default_rpm=2, default_tpm=10_000)
    await limiter.admit("k", 10, rpm=None, tpm=None)
    await limiter.admit("k", 10, rpm=None, tpm=None)
    with pytest.raises(GatewayError) as refused:
        await limiter.admit("k", 10, rpm=None, tpm=None)
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    await limiter.admit("other", 10, rpm=None, tpm=None)  # limits are per key


async def test_tokens_per_minute_and_oversize_single_request() -> None:
    limiter = RateLimiter(default_rpm=100, default_tpm=1_000)
    await limiter.admit("k", 600, rpm=None, tpm=None)
    with pytest.raises(GatewayError, match="tokens per minute"):
        await limiter.admit("k", 600, rpm=None, tpm=None)
    with pytest.raises(GatewayError, match="needs ~5000 tokens"):
        await limiter.admit("k2", 5_000, rpm=None, tpm=None)
    await limiter.admit("k3", 5_000, rpm=None, tpm=6_000)  # a key's own limit wins


async def test_an_unreachable_database_falls_back_to_this_replicas_limits() -> None:
    # Nothing listens on port 9 of loopback: every connection is refused at once.
    async with Database("postgresql+asyncpg://nobody:x@127.0.0.1:9/none") as db:
        limiter = RateLimiter(default_rpm=3, default_tpm=10_000, shared=RateUsage(db))
        for _ in range(3):
            await limiter.admit("k", 10, rpm=None, tpm=None)
        with pytest.raises(GatewayError) as refused:
            await limiter.admit("k", 10, rpm=None, tpm=None)
    assert refused.value.status == 429
