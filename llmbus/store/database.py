"""Async SQLAlchemy engines; asyncpg's connection errors become DatabaseUnavailableError."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llmbus.errors import DatabaseUnavailableError, NotStartedError

T = TypeVar("T")


_UNAVAILABLE_CLASSES = ("08", "57", "40")
"""SQLSTATE classes that mean "not now" rather than "wrong": connection exceptions,
operator intervention (a server shutting down or starting up, 57P01-57P03), and
transaction rollback (a deadlock or serialization failure: the transaction was undone and
may simply be run again). A stop or restart of the server raises the first two, not
OperationalError, for connections already open."""


def make_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        # Connections that died while the database restarted are replaced, not reused.
        pool_pre_ping=True,
        # Fail fast when the database is away, so callers back off instead of hanging.
        connect_args={"timeout": 10},
    )


async def mapped(op: Callable[[], Awaitable[T]]) -> T:
    """Run ``op``; a lost or refused connection is raised as DatabaseUnavailableError."""
    try:
        return await op()
    except (OperationalError, InterfaceError, OSError, ConnectionError) as exc:
        raise DatabaseUnavailableError(f"database unavailable: {type(exc).__name__}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise DatabaseUnavailableError("database connection lost") from exc
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if sqlstate[:2] in _UNAVAILABLE_CLASSES:
            raise DatabaseUnavailableError(
                f"database busy or unavailable: SQLSTATE {sqlstate}"
            ) from exc
        raise


class Database:
    """One engine with a lifecycle; the stores share it rather than open their own."""

    def __init__(self, url: str, *, pool_size: int = 2) -> None:
        self._url = url
        self._pool_size = pool_size
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise NotStartedError("Database used before start()")
        return self._engine

    async def start(self) -> None:
        self._engine = make_engine(self._url, pool_size=self._pool_size)

    async def stop(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await engine.dispose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
