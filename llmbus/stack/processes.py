"""Small helpers shared by the local Kafka node and PostgreSQL cluster."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from llmbus.errors import SetupError


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(
    host: str, port: int, *, timeout_s: float, what: str, logs: tuple[Path, ...]
) -> None:
    """Wait until ``port`` accepts connections; on timeout, raise ``SetupError`` with the
    end of each of ``logs`` (a server may write its own errors and its runtime's apart)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.2)
    tails = "".join(
        f"\n--- {log}:\n"
        + (log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)")
        for log in logs
    )
    raise SetupError(f"{what} did not listen on {host}:{port} in {timeout_s:.0f}s{tails}")


def read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0].strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def terminate(pid: int, *, timeout_s: float) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_gone(pid, timeout_s=timeout_s):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(pid)


def wait_gone(pid: int, *, timeout_s: float) -> bool:
    """Wait until the process ``pid`` has exited; False if it still runs after the wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.1)
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def free_port() -> int:
    """A loopback port that is free now (for test and benchmark stacks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
