"""A progress bar for the terminal; plain periodic lines when output is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_REDRAW_S = 0.1
"""At most ten redraws a second: smooth to the eye, negligible next to the work."""
_LOG_EVERY_S = 5.0
"""Without a terminal (CI logs, pipes) one line every few seconds is plenty."""


class ProgressBar:
    def __init__(self, label: str, total: int, *, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = max(total, 0)
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._done = 0
        self._detail = ""
        self._last = 0.0
        self._start = time.monotonic()

    def advance(self, n: int = 1) -> None:
        self.update(self._done + n)

    def update(self, done: int, detail: str = "") -> None:
        self._done = done
        self._detail = detail
        now = time.monotonic()
        if now - self._last >= (_REDRAW_S if self._tty else _LOG_EVERY_S):
            self._last = now
            self._draw(final=False)

    def close(self) -> None:
        self._draw(final=True)

    def _draw(self, *, final: bool) -> None:
        total = self._total or 1
        share = min(self._done / total, 1.0)
        width = 30
        bar = "#" * int(share * width) + "-" * (width - int(share * width))
        elapsed = time.monotonic() - self._start
        line = (
            f"{self._label} [{bar}] {self._done}/{self._total} {share:6.1%} {elapsed:5.0f}s"
            f"{'  ' + self._detail if self._detail else ''}"
        )
        if self._tty:
            self._stream.write("\r" + line + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
