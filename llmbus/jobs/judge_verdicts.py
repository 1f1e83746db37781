"""A judge's verdicts on replay pairs: parsed from its answers, and tallied as win, tie and
loss rates with 95% confidence intervals (Wilson's score interval: sound for the small
counts and the shares near 0 or 1 that a replay of a few dozen conversations gives)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Winner = Literal["replay", "original", "tie"]

Z95 = 1.959963984540054
"""The normal quantile of a two-sided 95% interval."""

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "better": {"type": "string", "enum": ["A", "B", "tie"]},
        # Bounded so the whole verdict fits the judge's max_tokens and stays valid JSON.
        "reason": {"type": "string", "maxLength": 160},
    },
    "required": ["better", "reason"],
    "additionalProperties": False,
}
"""What the judge must answer (enforced by the engine's structured outputs)."""


@dataclass(frozen=True)
class Verdict:
    winner: Winner
    reason: str
    shown_first: Winner
    """Which answer the judge saw as A (the order is drawn at random for each pair)."""


def parse_verdict(output: str | None, first: str) -> Verdict | None:
    """The judge's answer read back into which side won; None when it is not a verdict."""
    if first not in ("original", "replay") or not output:
        return None
    try:
        answer = json.loads(output)
    except ValueError:
        return None
    if not isinstance(answer, dict) or answer.get("better") not in ("A", "B", "tie"):
        return None
    shown: Winner = "replay" if first == "replay" else "original"
    other: Winner = "original" if shown == "replay" else "replay"
    winner: Winner = {"A": shown, "B": other}.get(answer["better"], "tie")
    return Verdict(winner, str(answer.get("reason", "")).strip(), shown)


@dataclass(frozen=True)
class Share:
    count: int
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class JudgeTally:
    model: str
    judged: int
    unjudged: int
    """Compared pairs without a verdict (judging pending or failed)."""
    failed: int
    """Of those, pairs whose judging failed for good (``ReplayJudge`` does not resend)."""
    replay_better: Share
    tie: Share
    original_better: Share
    replay_first: int
    """Verdicts given with the replay shown as A: about half, if the order was random."""


def wilson(count: int, n: int) -> Share:
    if n == 0:
        return Share(0, 0.0, 0.0, 1.0)
    p = count / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Share(count, p, max(0.0, centre - half), min(1.0, centre + half))


def tally(model: str, verdicts: Sequence[Verdict | None], *, failed: int = 0) -> JudgeTally:
    given = [v for v in verdicts if v is not None]
    n = len(given)
    return JudgeTally(
        model=model,
        judged=n,
        unjudged=len(verdicts) - n,
        failed=failed,
        replay_better=wilson(sum(v.winner == "replay" for v in given), n),
        tie=wilson(sum(v.winner == "tie" for v in given), n),
        original_better=wilson(sum(v.winner == "original" for v in given), n),
        replay_first=sum(v.shown_first == "replay" for v in given),
    )
