"""Waiting in a test for something another process or task does."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable

POLL_S = 0.05
"""Short beside every wait it serves (seconds), and the check is cheap (a metric read)."""


async def eventually(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Return once ``check()`` holds; fail the test with ``what`` if it does not within
    ``timeout_s``."""
    give_up = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > give_up:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        await asyncio.sleep(POLL_S)


class ProcessOutput:
    """A process's output, read in a thread (a full pipe would block the process) and kept
    for assertions and failure messages."""

    def __init__(self, proc: subprocess.Popen[bytes], marker: bytes = b"") -> None:
        self.lines: list[bytes] = []
        self.marked = threading.Event()
        """Set at the first line holding ``marker``."""
        self.ended = threading.Event()
        """Set once the output is closed: the process (and whatever shares its output)
        has exited and every line is in ``lines``."""
        threading.Thread(target=self._read, args=(proc, marker), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes], marker: bytes) -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                self.lines.append(line)
                if marker in line:
                    self.marked.set()
        finally:
            self.ended.set()

    def text(self) -> str:
        return b"".join(self.lines).decode(errors="replace")
