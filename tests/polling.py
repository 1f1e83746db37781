"""Waiting in a test for something another process or task does."""

from __future__ import annotations

import asyncio
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
