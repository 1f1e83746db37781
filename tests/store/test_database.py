"""Which database failures mean "retry later" (DatabaseUnavailableError) and which do not."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy.exc import DBAPIError

from llmbus.errors import DatabaseUnavailableError
from llmbus.store.database import mapped


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _failing(sqlstate: str) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        raise DBAPIError("SELECT 1", {}, _DriverError(sqlstate))

    return op


@pytest.mark.parametrize("sqlstate", ["57P01", "57P03", "08006"])
async def test_a_server_shutting_down_or_starting_is_unavailable(sqlstate: str) -> None:
    # "the database system is shutting down" (57P03) reached the auditor as a plain
    # DBAPIError during a restart and stopped it; it must be retried instead.
    with pytest.raises(DatabaseUnavailableError, match=sqlstate):
        await mapped(_failing(sqlstate))


async def test_a_wrong_statement_is_not_retried() -> None:
    with pytest.raises(DBAPIError):
        await mapped(_failing("42P01"))  # undefined_table: a bug, not an outage
