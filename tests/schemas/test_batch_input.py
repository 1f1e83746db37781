import json

from llmbus.schemas.batch_input import MAX_REPORTED_ERRORS, output_line, parse_batch_lines


def line(custom_id: str, **body: object) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body},
        }
    )


def test_valid_lines_keep_their_numbers_and_blank_lines_are_ignored() -> None:
    parsed = parse_batch_lines([line("a"), "", line("b", max_tokens=5)])
    assert parsed.error_count == 0
    assert [(n, item.custom_id) for n, item in parsed.lines] == [(1, "a"), (3, "b")]
    assert parsed.lines[1][1].body.max_tokens == 5


def test_each_kind_of_bad_line_is_reported_by_number() -> None:
    bad = [
        line("ok"),
        "{not json",
        "[1, 2]",
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
        line("x").replace("/v1/chat/completions", "/v1/images/generations"),
        line("ok"),
        line("y", temperature=9),
        line("z", logprobs=True, top_logprobs=21),
        line("w", audio={"voice": "alloy"}),
        line("v", unknown_field=1),
        line("p").replace('"messages": [{"role": "user", "content": "hi"}]', '"prompt": "hi"'),
    ]
    parsed = parse_batch_lines(bad)
    reasons = {e.line: e.reason for e in parsed.errors}
    assert parsed.error_count == 10
    assert [n for n, _ in parsed.lines] == [1]
    assert reasons[2].startswith("not JSON")
    assert reasons[3] == "not a JSON object"
    assert "custom_id" in reasons[4]
    assert reasons[5].startswith("url")
    assert "repeats line 1" in reasons[6]
    assert reasons[7].startswith("body.temperature")
    assert reasons[8].startswith("body.top_logprobs")
    assert "audio is not supported" in reasons[9]
    assert reasons[10] == "body.unknown_field: Extra inputs are not permitted"
    assert "needs 'messages'" in reasons[11]


def test_completions_lines_and_one_endpoint_per_batch() -> None:
    chat = line("c", tools=[{"type": "function", "function": {"name": "f"}}])
    text = json.dumps(
        {
            "custom_id": "t",
            "method": "POST",
            "url": "/v1/completions",
            "body": {"model": "m", "prompt": ["a", "b"], "echo": True, "logprobs": 2},
        }
    )
    parsed = parse_batch_lines([chat, text])
    assert parsed.error_count == 0
    assert [item.url for _, item in parsed.lines] == ["/v1/chat/completions", "/v1/completions"]
    assert parsed.lines[1][1].body.prompts() == ["a", "b"]
    only_chat = parse_batch_lines([chat, text], url="/v1/chat/completions")
    assert only_chat.error_count == 1
    assert "differs from the batch's endpoint" in only_chat.errors[0].reason


def test_model_override_applies_to_every_line() -> None:
    parsed = parse_batch_lines([line("a"), line("b")], model="other")
    assert {item.body.model for _, item in parsed.lines} == {"other"}


def test_only_the_first_errors_are_kept_but_all_are_counted() -> None:
    parsed = parse_batch_lines(["nope"] * 100)
    assert parsed.error_count == 100
    assert len(parsed.errors) == MAX_REPORTED_ERRORS


def test_output_lines_follow_openai_batch_format() -> None:
    ok = output_line(
        request_id="r1", custom_id="c1", completion={"id": "x"}, error_code=None, error_message=None
    )
    assert ok["response"] == {"status_code": 200, "request_id": "r1", "body": {"id": "x"}}
    assert ok["error"] is None and ok["custom_id"] == "c1"
    err = output_line(
        request_id="r2", custom_id="c2", completion=None, error_code="cancelled", error_message="m"
    )
    assert err["response"] is None
    assert err["error"] == {"code": "cancelled", "message": "m"}
