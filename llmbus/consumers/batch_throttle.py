"""How many batch requests may share the engine while interactive requests run.

On a CPU an engine step costs roughly in proportion to the sequences in it, so an
interactive request beside 56 batch sequences decodes about four times slower than alone.
vLLM will not preempt a running request to help a waiting one (priority scheduling only
orders admission and KV-cache preemption), so the lever is admission: while interactive
requests are in flight, and for ``hold_s`` after the last one, the batch lane may hold
only as many sequences as keep an interactive token within ``slowdown`` times its cost
alone. Batch work already in the engine finishes; new batch work waits in Kafka. When no
interactive request has been seen for ``hold_s`` the batch lane gets every slot again.

The cost of a step is learned, not configured: ``StepCostModel`` fits
``step = base + per_seq * sequences`` to the engine's own step timings. On a GPU, where a
step costs nearly the same for 1 or 64 sequences, ``per_seq`` comes out near zero and the
cap never bites.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

_MIN_SPREAD = 2.0
"""Sequences of spread (standard deviation) the step samples need before the fitted slope
is trusted; without it, noise at one occupancy would be read as a slope."""

_EWMA = 0.05
"""Weight of a new step in its occupancy's mean: smooths prefill spikes over ~20 steps."""

_MAX_WEIGHT = 50
"""A bucket counts at most this many samples in the fit, so the occupancy the engine sits
at most of the time does not drown out the rare ones the slope is measured against."""


class StepCostModel:
    """Mean engine step time per number of running sequences, and a line through them."""

    def __init__(self) -> None:
        self._mean: dict[int, float] = {}
        self._count: dict[int, int] = {}
        self._fit: tuple[float, float] | None = None
        self._dirty = False

    def observe(self, running: int, step_s: float) -> None:
        if running <= 0 or not math.isfinite(step_s) or step_s <= 0:
            return
        old = self._mean.get(running)
        self._mean[running] = step_s if old is None else old + _EWMA * (step_s - old)
        self._count[running] = self._count.get(running, 0) + 1
        self._dirty = True

    def fitted(self) -> tuple[float, float] | None:
        """``(base_s, per_seq_s)``, or None while the samples span too few occupancies."""
        if self._dirty:
            self._fit, self._dirty = self._least_squares(), False
        return self._fit

    def _least_squares(self) -> tuple[float, float] | None:
        weights = {n: min(c, _MAX_WEIGHT) for n, c in self._count.items()}
        total = sum(weights.values())
        if total == 0:
            return None
        mx = sum(w * n for n, w in weights.items()) / total
        my = sum(w * self._mean[n] for n, w in weights.items()) / total
        var = sum(w * (n - mx) ** 2 for n, w in weights.items()) / total
        if var < _MIN_SPREAD**2:
            return None
        cov = sum(w * (n - mx) * (self._mean[n] - my) for n, w in weights.items()) / total
        per_seq = cov / var
        return my - per_seq * mx, per_seq


class BatchThrottle:
    def __init__(
        self,
        *,
        max_batch: int,
        slowdown: float,
        hold_s: float,
        costs: StepCostModel,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_batch = max_batch
        self._slowdown = slowdown
        self._hold_s = hold_s
        self._costs = costs
        self._clock = clock
        self._last_interactive = -math.inf

    def interactive_seen(self) -> None:
        """An interactive request started or finished now."""
        self._last_interactive = self._clock()

    def limit(self, interactive: int) -> int:
        """Batch slots allowed now, with ``interactive`` requests in flight."""
        if self._slowdown <= 1 or self._max_batch <= 1:
            return self._max_batch
        if interactive == 0 and self._clock() - self._last_interactive > self._hold_s:
            return self._max_batch
        fit = self._costs.fitted()
        if fit is None:
            return self._max_batch
        base, per_seq = fit
        if per_seq <= 0:
            return self._max_batch
        alone = base + per_seq * max(1, interactive)
        # base + per_seq * (interactive + k) <= slowdown * alone, solved for k.
        allowed = math.floor((self._slowdown - 1) * alone / per_seq)
        return max(1, min(self._max_batch, allowed))


def batch_limit_log_level(before: int, after: int, full: int) -> int:
    """INFO when the batch lane starts or stops giving way, DEBUG for the moves between:
    while the throttle holds, the limit follows every interactive start and finish and
    every refit of the step cost (about 100 changes in 30 s of a busy 2-core worker), which
    the gauge ``llmbus_batch_slot_limit`` shows without filling the log."""
    return logging.INFO if full in (before, after) else logging.DEBUG
