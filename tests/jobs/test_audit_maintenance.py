"""``llmbus audit maintain`` when PostgreSQL goes away in the middle of a run: it says so
and exits 1, leaves no step half done, and a second run finishes the job."""

from __future__ import annotations

import asyncio
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import Bus

pytestmark = pytest.mark.integration

OLD_DAY = "p20200101"


async def _exists(engine: AsyncEngine, table: str) -> bool:
    async with engine.connect() as conn:
        return bool(await conn.scalar(text(f"SELECT to_regclass('llmbus.{table}') IS NOT NULL")))


async def _maintain(env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmbus.cli", "audit", "maintain", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_postgres_down_during_maintenance(isolated_bus: Bus) -> None:
    stack = isolated_bus.stack
    env = {**isolated_bus.env(), "LLMBUS_AUDIT_RETENTION_DAYS": "30"}
    owner = create_async_engine(stack.postgres.url("llmbus_owner"))
    async with owner.begin() as conn:
        await conn.execute(text("SELECT llmbus.ensure_audit_partitions('2020-01-01')"))
    # An analyst's open transaction on the old day: the run's DROP waits for it, so the
    # database is stopped while the run is in the middle of its retention step.
    blocker = await owner.connect()
    await blocker.begin()
    await blocker.execute(text(f"LOCK TABLE llmbus.requests_{OLD_DAY} IN ACCESS SHARE MODE"))
    run = asyncio.create_task(_maintain(env))
    watcher = create_async_engine(stack.postgres.url("llmbus_admin", "postgres"))
    for _ in range(120):
        async with watcher.connect() as conn:
            waiting = await conn.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            )
        if waiting:
            break
        await asyncio.sleep(0.25)
    assert waiting, "the maintenance run never reached the locked partition"
    await watcher.dispose()
    await asyncio.to_thread(stack.postgres.stop)
    code, out, err = await run
    assert code == 1, (out, err)
    assert "run it again" in err and "Traceback" not in err, err
    # The blocker's session died with the server: dropped, not rolled back, and not left
    # for the garbage collector (dispose() closes only connections back in the pool).
    await blocker.invalidate()
    await owner.dispose()

    await asyncio.to_thread(stack.postgres.start)
    owner = create_async_engine(stack.postgres.url("llmbus_owner"))
    try:
        # The interrupted drop did not happen in part: all three tables of the day remain.
        for table in ("requests", "results", "gateway_calls"):
            assert await _exists(owner, f"{table}_{OLD_DAY}"), table
        code, out, err = await _maintain(env)
        assert code == 0, err
        assert "dropped: 3" in out, out
        for table in ("requests", "results", "gateway_calls"):
            assert not await _exists(owner, f"{table}_{OLD_DAY}"), table
    finally:
        await owner.dispose()
