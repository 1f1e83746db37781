import pytest

from llmbus.gateway.openai_errors import GatewayError
from llmbus.gateway.rate_limits import RateLimiter


def test_requests_per_minute_then_429_with_retry_after() -> None:
    limiter = RateLimiter(default_rpm=2, default_tpm=10_000)
    limiter.admit("k", 10, rpm=None, tpm=None)
    limiter.admit("k", 10, rpm=None, tpm=None)
    with pytest.raises(GatewayError) as refused:
        limiter.admit("k", 10, rpm=None, tpm=None)
    assert refused.value.status == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    limiter.admit("other", 10, rpm=None, tpm=None)  # limits are per key


def test_tokens_per_minute_and_oversize_single_request() -> None:
    limiter = RateLimiter(default_rpm=100, default_tpm=1_000)
    limiter.admit("k", 600, rpm=None, tpm=None)
    with pytest.raises(GatewayError, match="tokens per minute"):
        limiter.admit("k", 600, rpm=None, tpm=None)
    with pytest.raises(GatewayError, match="needs ~5000 tokens"):
        limiter.admit("k2", 5_000, rpm=None, tpm=None)
    limiter.admit("k3", 5_000, rpm=None, tpm=6_000)  # a key's own limit wins
