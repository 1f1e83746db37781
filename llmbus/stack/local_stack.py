"""``llmbus up`` / ``llmbus down``: the local Kafka (one node or a cluster) and PostgreSQL
cluster together."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from llmbus.bus import ensure_topics
from llmbus.bus.admin import wait_for_brokers
from llmbus.settings import Settings
from llmbus.stack.kafka_cluster import KafkaCluster, formatted_nodes
from llmbus.stack.postgres_cluster import DATABASE, PostgresCluster
from llmbus.store.migrate import upgrade_to_head

ENV_FILE = "llmbus.env"


@dataclass(frozen=True)
class StackReport:
    kafka_started: bool
    postgres_started: bool
    env_file: Path

    @property
    def already_running(self) -> bool:
        return not (self.kafka_started or self.postgres_started)


class LocalStack:
    def __init__(
        self,
        settings: Settings,
        *,
        fast_unsafe: bool = False,
        brokers: int | None = None,
        kafka_ports: list[tuple[int, int]] | None = None,
    ) -> None:
        """``brokers``: Kafka nodes to run; default: as many as were made before in the
        state folder (so ``down`` stops a cluster), else ``settings.kafka_brokers``.
        ``kafka_ports``: (client, controller) port per node instead of the settings'."""
        self.settings = settings
        if brokers is None and "kafka_brokers" in settings.model_fields_set:
            brokers = settings.kafka_brokers  # set explicitly: as binding as --brokers
        if kafka_ports is None:
            n = brokers or formatted_nodes(settings.state_dir) or settings.kafka_brokers
            kafka_ports = [
                (settings.kafka_port + 2 * i, settings.kafka_controller_port + 2 * i)
                for i in range(n)
            ]
        self.kafka = KafkaCluster.local(settings.state_dir, settings.cache_dir, kafka_ports)
        self.postgres = PostgresCluster(
            state_dir=settings.state_dir, port=settings.postgres_port, fast_unsafe=fast_unsafe
        )

    @property
    def env_file(self) -> Path:
        return self.settings.state_dir / ENV_FILE

    def env(self) -> dict[str, str]:
        """The settings a process needs to use this stack (contains credentials)."""
        return {
            "LLMBUS_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "LLMBUS_DATABASE_URL": self.postgres.url("llmbus_writer"),
            "LLMBUS_MIGRATION_DATABASE_URL": self.postgres.url("llmbus_owner"),
            "LLMBUS_ANALYST_DATABASE_URL": self.postgres.url("llmbus_reader"),
            "LLMBUS_STATE_DIR": str(self.settings.state_dir),
        }

    async def up(self) -> StackReport:
        """Start what is not running, then make roles, schema, migrations and topics
        current. Every step is idempotent, so ``up`` on a running stack is a no-op."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        kafka_started = await asyncio.to_thread(self.kafka.start)
        postgres_started = await asyncio.to_thread(self.postgres.start)
        await wait_for_brokers(self.kafka.bootstrap, len(self.kafka.nodes))
        await self._bootstrap_database()
        await asyncio.to_thread(upgrade_to_head, self.postgres.url("llmbus_owner"))
        await ensure_topics(
            self.kafka.bootstrap, self.settings.topics(), layout=self.settings.topic_layout
        )
        self._write_env_file()
        return StackReport(kafka_started, postgres_started, self.env_file)

    def down(self, *, purge: bool = False) -> tuple[bool, bool]:
        kafka = self.kafka.stop()
        postgres = self.postgres.stop()
        if purge:
            self.postgres.purge()
            self.kafka.purge()
        return kafka, postgres

    async def _bootstrap_database(self) -> None:
        pg = self.postgres
        admin = create_async_engine(
            pg.url("llmbus_admin", database="postgres"),
            isolation_level="AUTOCOMMIT",
        )
        try:
            async with admin.connect() as conn:
                for stmt in pg.bootstrap_sql():
                    await conn.execute(text(stmt))
                exists = await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": DATABASE}
                )
                if not exists:
                    await conn.execute(text(f"CREATE DATABASE {DATABASE} OWNER llmbus_admin"))
                    await conn.execute(text(f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC"))
                    await conn.execute(
                        text(
                            f"GRANT CONNECT ON DATABASE {DATABASE} "
                            "TO llmbus_owner, llmbus_writer, llmbus_reader"
                        )
                    )
        finally:
            await admin.dispose()
        db = create_async_engine(pg.url("llmbus_admin"), isolation_level="AUTOCOMMIT")
        try:
            async with db.connect() as conn:
                for stmt in pg.owner_sql():
                    await conn.execute(text(stmt))
        finally:
            await db.dispose()

    def _write_env_file(self) -> None:
        body = "".join(f"export {k}='{v}'\n" for k, v in self.env().items())
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("# written by `llmbus up`; holds credentials: keep it private\n" + body)
