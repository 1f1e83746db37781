"""A batch's status from its row, its results' counts and its events (``_status``): the
cases a judging or an empty replay run relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llmbus.jobs.replay_judge import PUBLISH_GIVE_UP, _abandoned
from llmbus.store.batch_store import _status

MADE = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def row(total: int, **counts: Any) -> dict[str, Any]:
    return {
        "batch_id": "b",
        "kind": "judge",
        "model": "m",
        "total": total,
        "completed": counts.get("completed", 0),
        "failed": 0,
        "cancelled": counts.get("cancelled", 0),
        "late": 0,
        "last_finished": counts.get("last_finished"),
        "created_at": MADE,
        "source": None,
        "tenant_id": None,
        "params": {},
    }


def test_cancelled_while_publishing_is_finished_at_the_cancel() -> None:
    at = MADE + timedelta(seconds=5)
    s = _status(row(4), {"cancel_requested": at})
    assert (s.status, s.finished_at) == ("cancelled", at)
    # Once published, it waits for its requests' finals as any cancelled batch does.
    s = _status(row(4), {"cancel_requested": at, "published": MADE})
    assert (s.status, s.finished_at) == ("cancelling", None)


def test_an_empty_run_is_completed_once_published() -> None:
    assert _status(row(0), {}).status == "publishing"
    s = _status(row(0), {"published": MADE})
    assert (s.status, s.finished_at) == ("completed", MADE)


def test_a_judging_left_publishing_is_given_up_after_a_while() -> None:
    # Ages from now, taken in the test: a module-level "now" is stale in a long session.
    now = datetime.now(UTC)
    fresh = _status(row(4) | {"created_at": now - timedelta(minutes=1)}, {})
    assert fresh.status == "publishing" and not _abandoned(fresh)
    made = now - PUBLISH_GIVE_UP - timedelta(seconds=1)
    assert _abandoned(_status(row(4) | {"created_at": made}, {}))
    assert not _abandoned(_status(row(4) | {"created_at": made}, {"published": made}))
