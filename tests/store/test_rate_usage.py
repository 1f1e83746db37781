"""Rate limits shared by gateway replicas, counted in the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from llmbus.stack.local_stack import LocalStack
from llmbus.store.database import Database
from llmbus.store.rate_usage import RateUsage

pytestmark = pytest.mark.integration

MINUTE = 29_000_000 * 60.0  # an epoch minute in 2025, so tests never meet real traffic


@pytest.fixture
async def replicas(stack: LocalStack) -> AsyncIterator[tuple[RateUsage, RateUsage]]:
    """Two gateways' counters, each on its own connection pool, as the gateway's role."""
    async with (
        Database(stack.postgres.url("llmbus_writer")) as one,
        Database(stack.postgres.url("llmbus_writer")) as two,
    ):
        yield RateUsage(one), RateUsage(two)


async def test_two_replicas_share_one_limit(replicas: tuple[RateUsage, RateUsage]) -> None:
    a, b = replicas
    key = f"key:{uuid.uuid4().hex[:12]}"
    now = MINUTE + 10
    outcomes = [
        await (a if i % 2 else b).admit(key, 10, rpm=5, tpm=10_000, now=now) for i in range(6)
    ]
    assert outcomes[:5] == [None] * 5
    refusal = outcomes[5]
    assert refusal is not None and refusal.what == "requests" and refusal.limit == 5
    assert 0 < refusal.retry_after_s <= 90
    # Retry-After is truthful: a little earlier is still refused, on time is admitted.
    wait = refusal.retry_after_s
    assert await a.admit(key, 10, rpm=5, tpm=10_000, now=now + wait - 2) is not None
    assert await b.admit(key, 10, rpm=5, tpm=10_000, now=now + wait + 0.5) is None
    assert await a.admit(f"{key}-other", 10, rpm=5, tpm=10_000, now=now) is None
    tokens = await b.admit(f"{key}-tok", 900, rpm=5, tpm=1_000, now=now)
    assert tokens is None
    refused = await a.admit(f"{key}-tok", 200, rpm=5, tpm=1_000, now=now)
    assert refused is not None and refused.what == "tokens"


async def test_concurrent_calls_on_two_replicas_never_overshoot(
    replicas: tuple[RateUsage, RateUsage],
) -> None:
    a, b = replicas
    key = f"key:{uuid.uuid4().hex[:12]}"
    calls = [(a if i % 2 else b).admit(key, 1, rpm=7, tpm=10_000, now=MINUTE) for i in range(30)]
    outcomes = await asyncio.gather(*calls)
    print(f"\n[shared limits] calls=30 rpm=7 admitted={outcomes.count(None)}")
    assert outcomes.count(None) == 7


async def test_the_previous_minute_slides_out_of_the_window(
    replicas: tuple[RateUsage, RateUsage],
) -> None:
    a, _ = replicas
    key = f"key:{uuid.uuid4().hex[:12]}"
    for _ in range(6):
        assert await a.admit(key, 1, rpm=6, tpm=10_000, now=MINUTE + 50) is None
    # 30 s into the next minute half of the previous one is still inside the last 60 s:
    # 6 * 0.5 = 3 counted, so 3 more fit.
    later = [await a.admit(key, 1, rpm=6, tpm=10_000, now=MINUTE + 90) for _ in range(4)]
    assert later[:3] == [None] * 3
    refusal = later[3]
    assert refusal is not None
    # Another ~1/6 of the previous minute must slide out: about 10 s.
    assert 5 <= refusal.retry_after_s <= 15


async def test_the_analyst_role_cannot_count_and_a_refusal_counts_nothing(
    stack: LocalStack, replicas: tuple[RateUsage, RateUsage]
) -> None:
    a, _ = replicas
    key = f"key:{uuid.uuid4().hex[:12]}"
    call = text("SELECT admitted FROM llmbus.rate_admit(:s, 1, 0.0, 1, 100, 100)")
    async with Database(stack.postgres.url("llmbus_reader")) as reader:
        # The function runs with its caller's rights: the reader may not touch the counters.
        with pytest.raises(ProgrammingError, match="permission denied for table rate_usage"):
            async with reader.engine.connect() as conn:
                await conn.execute(call, {"s": key})
    assert await a.admit(key, 1, rpm=1, tpm=10_000, now=MINUTE) is None
    for _ in range(3):
        assert await a.admit(key, 1, rpm=1, tpm=10_000, now=MINUTE) is not None
    async with (
        Database(stack.postgres.url("llmbus_owner")) as owner,
        owner.engine.connect() as conn,
    ):
        counted = await conn.execute(
            text("SELECT requests, tokens FROM llmbus.rate_usage WHERE subject = :s"), {"s": key}
        )
        assert counted.all() == [(1, 1)]
