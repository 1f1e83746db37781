"""What a replay run changed and how its answers compare with the originals: the facts
behind ``llmbus replay report`` (terminal: ``replay_text``, page: ``replay_page``).

Latency is split the way an analyst can act on it: queue wait (created to picked up by a
worker), time to first token once on a worker, and time per output token after it. An
original batch that waited an hour for a worker is then not "slower" than its replay.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any

from llmbus.jobs.judge_verdicts import JudgeTally, Verdict, tally
from llmbus.jobs.pair_text import prompt_text, text_similarity
from llmbus.jobs.replay_settings import settings_changed
from llmbus.jobs.structured_checks import StructuredShares, structured_shares


@dataclass(frozen=True)
class Side:
    """One answer of a pair: the original's or the replay's."""

    status: str | None
    """``ok``, an error status, or None while not answered."""
    output: str | None
    completion_tokens: int | None
    queue_ms: float | None
    ttft_ms: float | None
    """From reaching a worker to the first token (the logged time less the queue wait)."""
    tpot_ms: float | None
    error: str | None = None

    @classmethod
    def of(cls, row: dict[str, Any], prefix: str) -> Side:
        def get(name: str) -> Any:
            return row.get(prefix + name)

        queue, ttft, total = get("queue_ms"), get("ttft_ms"), get("total_ms")
        tokens = get("completion_tokens")
        first = None if ttft is None or queue is None else max(0.0, ttft - queue)
        per_token = None
        if ttft is not None and total is not None and tokens is not None and tokens > 1:
            per_token = max(0.0, total - ttft) / (tokens - 1)
        error = get("error_code")
        if error and get("error_message"):
            error = f"{error}: {get('error_message')}"
        return cls(get("status"), get("output"), tokens, queue, first, per_token, error)


@dataclass(frozen=True)
class Pair:
    request_id: str
    replay_of: str
    tenant_id: str | None
    model: str
    original_model: str | None
    prompt: str
    original: Side
    replay: Side
    verdict: Verdict | None = None

    @property
    def state(self) -> str:
        if self.replay.status is None:
            return "pending"
        if self.replay.status != "ok":
            return "failed"
        if self.original.status != "ok":
            return "original failed"
        texts = isinstance(self.original.output, str) and isinstance(self.replay.output, str)
        return "compared" if texts else "no text"

    @cached_property
    def similarity(self) -> float | None:
        """The two outputs' word similarity (1.0 = identical); None unless compared.
        Computed when first asked: judging needs the pairs, not how alike they are."""
        a, b = self.original.output, self.replay.output
        if self.state != "compared" or a is None or b is None:
            return None
        return 1.0 if a == b else text_similarity(a, b)


@dataclass(frozen=True)
class Quantiles:
    n: int
    p50: float | None
    p95: float | None

    @classmethod
    def of(cls, values: list[float]) -> Quantiles:
        if not values:
            return cls(0, None, None)
        return cls(len(values), _quantile(values, 0.5), _quantile(values, 0.95))


@dataclass(frozen=True)
class Measure:
    name: str
    unit: str
    original: Quantiles
    replay: Quantiles


@dataclass(frozen=True)
class ReplayReport:
    run_id: str
    created_at: datetime | None
    status: str
    selection: dict[str, Any]
    settings: list[tuple[str, str, str]]
    """(field, the originals' values with counts, the replay's) for each field set."""
    counts: dict[str, int]
    """Pairs by state (compared, identical, failed, original failed, pending, no text)."""
    measures: list[Measure]
    similarity: Quantiles
    structured: StructuredShares | None
    judge: JudgeTally | None
    errors: list[tuple[str, int]]
    """The replay's error messages, most frequent first."""
    pairs: list[Pair] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.pairs)

    @property
    def compared(self) -> list[Pair]:
        return [p for p in self.pairs if p.state == "compared"]


def build_report(
    run: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    status: str,
    verdicts: dict[str, Verdict] | None = None,
    judge_model: str | None = None,
    judge_failed: int = 0,
) -> ReplayReport:
    """The report of run ``run`` (its batches row) from its pairs (``ReplayQuery.pairs``)
    and the judge's verdicts by replay request id, if any."""
    pairs = pairs_of(rows, verdicts)
    states = Counter(p.state for p in pairs)
    compared = [p for p in pairs if p.state == "compared"]
    counts = {
        "requests": len(pairs),
        "compared": len(compared),
        "identical": sum(p.similarity == 1.0 for p in compared),
        **{s: states.get(s, 0) for s in ("failed", "original failed", "pending", "no text")},
    }
    errors = Counter(p.replay.error or "unknown error" for p in pairs if p.state == "failed")
    return ReplayReport(
        run_id=run["batch_id"],
        created_at=run.get("created_at"),
        status=status,
        selection=dict((run.get("params") or {}).get("filter") or {}),
        settings=settings_changed(rows),
        counts=counts,
        measures=_measures(compared),
        similarity=Quantiles.of([p.similarity for p in compared if p.similarity is not None]),
        structured=structured_shares(rows),
        judge=(
            tally(judge_model, [p.verdict for p in compared], failed=judge_failed)
            if judge_model
            else None
        ),
        errors=errors.most_common(),
        pairs=pairs,
    )


def pairs_of(rows: list[dict[str, Any]], verdicts: dict[str, Verdict] | None = None) -> list[Pair]:
    """Each row of ``ReplayQuery.pairs`` as a pair, with its verdict where it has one."""
    verdicts = verdicts or {}
    pairs = []
    for row in rows:
        pair = Pair(
            request_id=row["request_id"],
            replay_of=row["replay_of"],
            tenant_id=row.get("tenant_id"),
            model=row["model"],
            original_model=row.get("original_model"),
            prompt=prompt_text(row.get("messages"), row.get("params") or {}),
            original=Side.of(row, "original_"),
            replay=Side.of(row, ""),
        )
        verdict = verdicts.get(pair.request_id)
        pairs.append(replace(pair, verdict=verdict) if pair.state == "compared" else pair)
    return pairs


def side_values(pairs: list[Pair], side: str, attr: str) -> list[float]:
    """``attr`` of each pair's ``side`` (original or replay) Side, where it is known."""
    got = (getattr(getattr(p, side), attr) for p in pairs)
    return [float(v) for v in got if v is not None]


def _measures(compared: list[Pair]) -> list[Measure]:
    def measure(name: str, unit: str, attr: str) -> Measure:
        original = Quantiles.of(side_values(compared, "original", attr))
        return Measure(name, unit, original, Quantiles.of(side_values(compared, "replay", attr)))

    return [
        measure("queue wait", "ms", "queue_ms"),
        measure("time to first token", "ms", "ttft_ms"),
        measure("time per output token", "ms", "tpot_ms"),
        measure("output tokens", "tokens", "completion_tokens"),
    ]


def _quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return float(statistics.quantiles(ordered, n=100, method="inclusive")[round(q * 100) - 1])
