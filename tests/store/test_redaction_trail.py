"""Redaction before write, end to end: personal data in a chat reaches the engine as sent,
and neither PostgreSQL, nor any log line, nor an export."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from llmbus import logs
from llmbus.schemas import ChatResult
from llmbus.store.audit_rows import RowPolicy
from llmbus.store.redaction import Redactor
from tests.conftest import Bus
from tests.fakes.echo_engine import EchoEngine
from tests.store.test_audit_trail import rows
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration

RAW = {
    "EMAIL": "ana.lopez@example.com",
    "PHONE": "+44 20 7946 0958",
    "CARD": "4111 1111 1111 1111",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "IP": "192.168.10.21",
    "EMPLOYEE_ID": "E123456",
}
CUSTOM = {"EMPLOYEE_ID": r"E[0-9]{6}"}
PROMPT = (
    f"I am {RAW['EMPLOYEE_ID']}, mail me at {RAW['EMAIL']} or call {RAW['PHONE']}. "
    f"Refund card {RAW['CARD']} to {RAW['IBAN']}; I wrote from {RAW['IP']}."
)


@pytest.fixture
def redacted_logs() -> Iterator[None]:
    """As ``llmbus`` installs it with LLMBUS_REDACT on, for this test only."""
    previous = logging.getLogRecordFactory()
    logs.install_redaction(Redactor(CUSTOM).redact)
    yield
    logging.setLogRecordFactory(previous)


async def test_raw_values_reach_the_model_but_not_the_trail_the_logs_or_an_export(
    bus: Bus,
    analyst_db: AsyncEngine,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    redacted_logs: None,
) -> None:
    tenant = f"pii-{uuid.uuid4().hex[:6]}"
    engine = EchoEngine(step_s=0.01)
    caplog.set_level(logging.DEBUG)
    await bus.start_worker(engine)
    await bus.start_auditor(policy=RowPolicy(redactor=Redactor(CUSTOM)))
    async with bus.client(tenant_id=tenant) as client:
        answer = await client.chat(
            PROMPT, metadata={"note": f"ticket from {RAW['EMAIL']}"}, max_tokens=4
        )
    assert isinstance(answer, ChatResult)
    rid = answer.request_id
    # The model saw what the user sent.
    assert engine.bodies[rid]["messages"][-1]["content"] == PROMPT
    # A log line quoting it (as an error message might) is redacted before any handler.
    logging.getLogger("llmbus.test").warning("could not answer: %s", PROMPT)

    stored: list[tuple[object, ...]] = []
    for _ in range(60):
        stored = await rows(
            analyst_db,
            "SELECT q.messages::text, q.params::text, q.metadata::text, r.output, "
            "r.completion::text FROM llmbus.requests q JOIN llmbus.results r "
            "USING (request_id, created_at) WHERE q.request_id = :r",
            r=rid,
        )
        if stored:
            break
        await asyncio.sleep(0.5)
    assert stored, "the audit rows did not arrive"
    trail = " ".join(str(cell) for cell in stored[0])
    for kind in RAW:
        assert f"[{kind}]" in trail, (kind, trail)

    out = tmp_path / "export.jsonl"
    code, _, err = await run_cli("export", "--tenant", tenant, "-o", str(out), env=bus.env())
    assert code == 0, err
    exported = out.read_text()
    assert json.loads(exported.splitlines()[0])["request_id"] == rid
    lines = [record.getMessage() for record in caplog.records]
    assert any("could not answer: I am [EMPLOYEE_ID]" in line for line in lines), lines[-5:]
    for kind, value in RAW.items():
        assert value not in trail, kind
        assert value not in exported, kind
        assert not [line for line in lines if value in line], kind
