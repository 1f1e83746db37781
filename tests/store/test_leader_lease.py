"""``LeaderLease`` on the real PostgreSQL: one holder per key, and no connection left
checked out when the lock query fails or is cancelled."""

from __future__ import annotations

import asyncio
import gc
import random
import warnings
from typing import Any

import pytest
from sqlalchemy.exc import SAWarning
from sqlalchemy.ext.asyncio import AsyncConnection

from llmbus.stack.local_stack import LocalStack
from llmbus.store.database import Database
from llmbus.store.leader_lease import LeaderLease

pytestmark = pytest.mark.integration


async def test_one_holder_then_the_standby_takes_over(stack: LocalStack) -> None:
    key = random.randrange(1 << 40)  # a key no other test or notifier uses
    async with (
        Database(stack.postgres.url("llmbus_writer")) as one,
        Database(stack.postgres.url("llmbus_writer")) as two,
    ):
        active, standby = LeaderLease(one, key), LeaderLease(two, key)
        assert await active.try_acquire() and await active.confirm()
        assert not await standby.try_acquire() and not standby.held
        assert two.engine.pool.checkedout() == 0, "the standby's try went back to the pool"
        await active.release()
        assert not active.held and one.engine.pool.checkedout() == 0
        assert await standby.try_acquire()
        await standby.release()


async def test_a_cancelled_lock_query_leaves_no_connection_behind(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled after connecting, before the answer: whether the lock was taken is
    unknown, so the session must end, not linger checked out until the collector finds it
    (or go back to the pool still holding the lock)."""

    async def cancelled(self: AsyncConnection, *args: Any, **kwargs: Any) -> Any:
        raise asyncio.CancelledError

    key = random.randrange(1 << 40)
    async with Database(stack.postgres.url("llmbus_writer")) as db:
        lease = LeaderLease(db, key)
        with monkeypatch.context() as patch, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            patch.setattr(AsyncConnection, "scalar", cancelled)
            with pytest.raises(asyncio.CancelledError):
                await lease.try_acquire()
            gc.collect()  # a connection dropped unreturned is reported when collected
        assert not [w.message for w in caught if issubclass(w.category, SAWarning)]
        assert not lease.held
        assert db.engine.pool.checkedout() == 0
        assert await lease.try_acquire(), "nothing kept the lock"
        await lease.release()
