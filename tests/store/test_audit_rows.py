"""What the audit rows keep of a request and its final under a ``RowPolicy``: redacted
text everywhere content can be, and no content at all for a row older than content
retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmbus.schemas import ErrorReply
from llmbus.store.audit_rows import RowPolicy, request_row, result_row
from llmbus.store.redaction import Redactor
from tests.store.test_audit_trail import make_request, make_result

SECRET = "write to ana@example.com"
POLICY = RowPolicy(redactor=Redactor(), content_retention_days=30)


def test_every_field_that_holds_content_is_redacted() -> None:
    req = make_request("r1", datetime.now(UTC), "t", SECRET)
    req = req.model_copy(update={"metadata": {"note": SECRET}})
    row = request_row(req, "topic", 0, 1, POLICY)
    final = result_row(make_result(req, SECRET), POLICY)
    error = result_row(ErrorReply(request_id="r1", code="x", message=SECRET), POLICY)
    stored = repr([row, final, error])
    assert "ana@example.com" not in stored
    assert row["messages"][0]["content"] == "write to [EMAIL]"
    assert row["metadata"] == {"note": "write to [EMAIL]"}
    assert final["output"] == "write to [EMAIL]"
    assert final["completion"]["choices"][0]["message"]["content"] == "write to [EMAIL]"
    assert error["error_message"] == "write to [EMAIL]"
    # Identifiers and counts are not content: they stay as they are.
    assert (row["tenant_id"], final["prompt_tokens"], final["_tenant_id"]) == ("t", 7, "t")


def test_a_row_past_content_retention_is_stored_without_content() -> None:
    old = make_request("r2", datetime.now(UTC) - timedelta(days=31), "t", SECRET)
    row = request_row(old, "topic", 0, 1, POLICY)
    final = result_row(make_result(old, SECRET), POLICY)
    assert row["messages"] == [] and row["params"]["max_tokens"] == 5
    assert final["output"] is None and final["completion"] is None
    assert final["completion_tokens"] == 3 and final["created_at"] == old.created_at
    recent = request_row(make_request("r3", datetime.now(UTC), "t", "hi"), "topic", 0, 2, POLICY)
    assert recent["messages"] == [{"role": "user", "content": "hi"}]
