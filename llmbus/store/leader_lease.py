"""``LeaderLease``: one active notifier per database, by a PostgreSQL advisory lock.

The lock lives as long as the session that took it, so it is held on a connection of its
own; when that connection dies (the process, the network, the server), PostgreSQL
releases the lock and a standby takes over at its next try.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from llmbus.errors import DatabaseUnavailableError
from llmbus.store.database import Database, mapped

log = logging.getLogger(__name__)


class LeaderLease:
    def __init__(self, db: Database, key: int) -> None:
        self._db = db
        self._key = key
        self._conn: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True while this process holds it."""
        if self._conn is not None:
            return True

        async def op() -> AsyncConnection | None:
            conn = await self._db.engine.connect()
            try:
                taken = await conn.scalar(select(func.pg_try_advisory_lock(self._key)))
            except BaseException:
                # Failed or cancelled mid-query: whether the lock was taken is unknown, so
                # the session ends (and a lock with it) rather than go back to the pool.
                await _end_session(conn)
                raise
            if taken:
                return conn
            await conn.close()  # not taken, so nothing held: back to the pool
            return None

        self._conn = await mapped(op)
        return self._conn is not None

    async def confirm(self) -> bool:
        """Whether the lease's connection is still alive (the lock with it)."""
        conn = self._conn
        if conn is None:
            return False
        try:
            await mapped(lambda: conn.scalar(select(1)))
        except DatabaseUnavailableError:
            log.warning("lost the notifier lease with its database connection")
            await self.release()
            return False
        return True

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await _end_session(conn)


async def _end_session(conn: AsyncConnection) -> None:
    """Invalidate, not return to the pool: the session ends and its advisory lock with it
    (a pooled session would keep holding the lock)."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception:
        log.debug("lease connection already gone", exc_info=True)
