"""A PostgreSQL cluster owned by llmbus, from Debian's packages, on a loopback port.

Roles follow least privilege:

* ``llmbus_admin``: the cluster's superuser, used only here to create roles and the database;
* ``llmbus_owner``: owns the ``llmbus`` schema and runs the migrations;
* ``llmbus_writer``: the auditor and the gateway; may INSERT and SELECT, never UPDATE,
  DELETE or DDL, except on the gateway's ``rate_usage`` counters (migration 0004);
* ``llmbus_reader``: analysts; SELECT only.

Passwords are random, kept in ``<state>/secrets.json`` (mode 0600), never printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from llmbus.errors import SetupError
from llmbus.stack.processes import port_open, read_pid, terminate

HOST = "127.0.0.1"
DATABASE = "llmbus"
ROLES = ("llmbus_admin", "llmbus_owner", "llmbus_writer", "llmbus_reader")


def pg_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise SetupError("PostgreSQL server binaries not found: run `make setup`")


@dataclass(frozen=True)
class PostgresCluster:
    state_dir: Path
    port: int
    fast_unsafe: bool = False
    """Turn off fsync for throwaway test clusters; never for data you keep."""

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        if not self._as_root:
            return self.state_dir / "postgres"
        # PostgreSQL refuses to run as root, and the `postgres` user cannot enter root's
        # home; keep a root-owned stack's cluster in postgres's own home instead.
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:12]
        return Path("/var/lib/postgresql/llmbus") / digest

    @property
    def _secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(pg_bin_dir() / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise SetupError(f"{args[0]} failed: {done.stdout[-1500:]} {done.stderr[-1500:]}")
        return done

    def passwords(self) -> dict[str, str]:
        if not self._secrets_file.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({role: secrets.token_urlsafe(24) for role in ROLES}, fh)
        loaded: dict[str, str] = json.loads(self._secrets_file.read_text())
        return loaded

    def url(self, role: str, database: str = DATABASE) -> str:
        password = quote(self.passwords()[role], safe="")
        return f"postgresql+asyncpg://{role}:{password}@{HOST}:{self.port}/{database}"

    def pid(self) -> int | None:
        return read_pid(self.data_dir / "postmaster.pid")

    def is_running(self) -> bool:
        return self.pid() is not None and port_open(HOST, self.port)

    def start(self) -> bool:
        """Initialise (once) and start the cluster; False if it was already running."""
        if self.is_running():
            return False
        if port_open(HOST, self.port):
            raise SetupError(f"port {self.port} is taken by another process")
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60", "start"
        )
        return True

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        done = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False
        )
        pid = self.pid()
        if done.returncode != 0 and pid is not None:
            terminate(pid, timeout_s=10)
        return True

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = self.data_dir.parent / f".pw-{self.data_dir.name}"
        pwfile.write_text(self.passwords()["llmbus_admin"])
        os.chmod(pwfile, 0o600)
        if self._as_root:
            shutil.chown(self.data_dir.parent, "postgres", "postgres")
            shutil.chown(self.data_dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        os.chmod(self.data_dir, 0o700)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "llmbus_admin",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--no-locale",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = [
            f"listen_addresses = '{HOST}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.data_dir}'",
            "max_connections = 100",
        ]
        if self.fast_unsafe:
            conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with open(self.data_dir / "postgresql.conf", "a") as fh:
            fh.write("\n# llmbus\n" + "\n".join(conf) + "\n")

    def bootstrap_sql(self) -> list[str]:
        """Statements (run as llmbus_admin) that create roles, database and grants."""
        pw = self.passwords()
        stmts = []
        for role in ROLES[1:]:
            stmts.append(
                f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname='{role}') THEN "
                f"CREATE ROLE {role} LOGIN PASSWORD '{pw[role]}'; END IF; END$$"
            )
        return stmts

    def owner_sql(self) -> list[str]:
        """Run in the llmbus database as admin: schema, and grants for future tables."""
        return [
            "REVOKE ALL ON SCHEMA public FROM PUBLIC",
            "CREATE SCHEMA IF NOT EXISTS llmbus AUTHORIZATION llmbus_owner",
            "GRANT USAGE ON SCHEMA llmbus TO llmbus_writer, llmbus_reader",
            "ALTER ROLE llmbus_owner SET search_path = llmbus",
            "ALTER ROLE llmbus_writer SET search_path = llmbus",
            "ALTER ROLE llmbus_reader SET search_path = llmbus",
            # Grants on tables the owner creates later (by migrations) are given here once.
            "ALTER DEFAULT PRIVILEGES FOR ROLE llmbus_owner IN SCHEMA llmbus "
            "GRANT SELECT, INSERT ON TABLES TO llmbus_writer",
            "ALTER DEFAULT PRIVILEGES FOR ROLE llmbus_owner IN SCHEMA llmbus "
            "GRANT SELECT ON TABLES TO llmbus_reader",
        ]
