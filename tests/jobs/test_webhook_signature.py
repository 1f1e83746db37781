"""Webhook signatures as the Standard Webhooks specification computes them, event ids
that do not depend on who mints them, and where webhooks may point."""

from __future__ import annotations

import pytest

from llmbus.errors import InvalidRequestError
from llmbus.jobs.webhook_sender import signature
from llmbus.schemas.events import BatchEventType, event_id
from llmbus.store.webhooks import check_url


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example in the Standard Webhooks specification (standard-webhooks/spec.md).
    signed = signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signed != signature(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265331,
        b'{"test": 2432232314}',
    )


def test_event_ids_are_one_per_batch_and_type() -> None:
    ids = {event_id("batch_1", t) for t in BatchEventType}
    assert len(ids) == len(BatchEventType)
    assert event_id("batch_1", BatchEventType.COMPLETED) == event_id(
        "batch_1", BatchEventType.COMPLETED
    )
    assert event_id("batch_2", BatchEventType.COMPLETED) not in ids


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/llmbus", "http://127.0.0.1:9000/x", "http://localhost/x"]
)
def test_webhooks_go_over_https_or_to_this_host(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url", ["http://hooks.example.com/x", "ftp://127.0.0.1/x", "https:///nohost", "hooks"]
)
def test_other_webhook_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidRequestError, match="https://"):
        check_url(url)
