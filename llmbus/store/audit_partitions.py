"""The audit trail's daily partitions: made ahead, dropped whole past retention, and
emptied of prompts and outputs past content retention.

Granularity is one day (UTC): retention is set in days and should act to the day; a day's
partition is small enough to drop or rewrite in one short transaction at any volume this
system reaches, while a year of retention stays a few hundred partitions per table, which
PostgreSQL prunes at plan time. ``PartitionCalendar`` is the writer's side (the auditor and
the gateway make a missing day through ``llmbus.ensure_audit_partitions``, a narrow
SECURITY DEFINER door); ``AuditMaintenance`` is the owner's (``llmbus audit maintain``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus.store.audit_rows import CONTENT_PARAMS

log = logging.getLogger(__name__)

PARTITIONED = ("requests", "results", "gateway_calls")
_DAY_FORMAT = "%Y%m%d"


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def today() -> date:
    return datetime.now(UTC).date()


class PartitionCalendar:
    """The days known to have partitions, so each write asks the database only about a day
    it has not seen (normally once a day, and not at all when made ahead)."""

    def __init__(self) -> None:
        self._known: set[date] = set()

    async def ensure(self, engine: AsyncEngine, days: Iterable[date], *, count: int = 1) -> None:
        """Make the partitions of ``days`` (and of the ``count - 1`` days after each), in a
        transaction of their own so that their locks are not held by a long write."""
        wanted = {d for d in days if any(d + timedelta(i) not in self._known for i in range(count))}
        if not wanted:
            return
        async with engine.begin() as conn:
            for day in sorted(wanted):
                await conn.execute(
                    text("SELECT llmbus.ensure_audit_partitions(:day, :count)"),
                    {"day": day, "count": count},
                )
        for day in wanted:
            self._known.update(day + timedelta(i) for i in range(count))

    def forget(self) -> None:
        """After an insert found no partition (one was dropped since): ask again."""
        self._known.clear()


@dataclass
class MaintenanceReport:
    created: int = 0
    dropped: list[str] = field(default_factory=list)
    purged_days: list[date] = field(default_factory=list)

    def summary(self) -> str:
        purged = ", ".join(d.isoformat() for d in self.purged_days) or "none"
        return (
            f"partitions created: {self.created}; dropped: {len(self.dropped)}"
            f"{' (' + ', '.join(self.dropped) + ')' if self.dropped else ''}; "
            f"content removed for days: {purged}"
        )


class AuditMaintenance:
    """Run with the schema owner's connection: dropping partitions and rewriting content
    are the owner's acts, never the writer role's. Each step commits on its own, so a run
    cut short (the database went away) leaves whole steps done and is simply run again."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(
        self, *, ahead_days: int, retention_days: int | None, content_retention_days: int | None
    ) -> MaintenanceReport:
        report = MaintenanceReport()
        async with self._engine.begin() as conn:
            report.created = int(
                await conn.scalar(
                    text("SELECT llmbus.ensure_audit_partitions(:day, :count)"),
                    {"day": today(), "count": ahead_days},
                )
                or 0
            )
        if retention_days is not None:
            report.dropped = await self.drop_before(today() - timedelta(days=retention_days))
        if content_retention_days is not None:
            horizon = today() - timedelta(days=content_retention_days)
            report.purged_days = await self.purge_content_before(horizon)
        return report

    async def partitions(self) -> dict[str, dict[date, str]]:
        """Each partitioned table's partitions by day."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT parent.relname, child.relname FROM pg_inherits i "
                    "JOIN pg_class child ON child.oid = i.inhrelid "
                    "JOIN pg_class parent ON parent.oid = i.inhparent "
                    "JOIN pg_namespace n ON n.oid = parent.relnamespace "
                    "WHERE n.nspname = 'llmbus' AND parent.relname = ANY(:parents)"
                ),
                {"parents": list(PARTITIONED)},
            )
            found: dict[str, dict[date, str]] = {name: {} for name in PARTITIONED}
            for parent, child in rows:
                suffix = child.removeprefix(f"{parent}_p")
                try:
                    day = datetime.strptime(suffix, _DAY_FORMAT).date()
                except ValueError:
                    continue  # not one of ours (someone attached their own): left alone
                found[parent][day] = child
            return found

    async def drop_before(self, horizon: date) -> list[str]:
        """Drop every partition of a day before ``horizon``: whole tables, no DELETE scan,
        no index bloat; one transaction per day, so a day goes whole or not at all. The
        usage aggregates are separate and stay."""
        doomed: dict[date, list[str]] = {}
        for days in (await self.partitions()).values():
            for day, name in days.items():
                if day < horizon:
                    doomed.setdefault(day, []).append(name)
        dropped: list[str] = []
        for day in sorted(doomed):
            async with self._engine.begin() as conn:
                for name in sorted(doomed[day]):
                    await conn.execute(text(f'DROP TABLE IF EXISTS llmbus."{name}"'))
            dropped += sorted(doomed[day])
            log.info("dropped the audit partitions of %s", day)
        return dropped

    async def purge_content_before(self, horizon: date) -> list[date]:
        """Remove prompts and outputs of each day before ``horizon`` not purged yet, one
        day per transaction; metadata, timings and token counts stay."""
        found = await self.partitions()
        async with self._engine.connect() as conn:
            done = set(
                (await conn.execute(text("SELECT day FROM llmbus.audit_content_purges"))).scalars()
            )
        days = sorted(
            d
            for d in found["requests"].keys() | found["results"].keys()
            if d < horizon and d not in done
        )
        strip = " - ".join(f"'{k}'" for k in CONTENT_PARAMS)
        for day in days:
            async with self._engine.begin() as conn:
                if (req := found["requests"].get(day)) is not None:
                    await conn.execute(
                        text(
                            f"UPDATE llmbus.\"{req}\" SET messages = '[]'::jsonb, "
                            f"params = params - {strip} "
                            f"WHERE messages <> '[]'::jsonb OR params ?| :keys"
                        ),
                        {"keys": list(CONTENT_PARAMS)},
                    )
                if (res := found["results"].get(day)) is not None:
                    await conn.execute(
                        text(
                            f'UPDATE llmbus."{res}" SET output = NULL, completion = NULL '
                            "WHERE output IS NOT NULL OR completion IS NOT NULL"
                        )
                    )
                await conn.execute(
                    text("INSERT INTO llmbus.audit_content_purges VALUES (:day, now())"),
                    {"day": day},
                )
            log.info("removed prompts and outputs of %s", day)
        return days
