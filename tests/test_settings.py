from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmbus.settings import Settings, requests_topic


def test_reads_llmbus_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBUS_KAFKA_BOOTSTRAP", "127.0.0.1:9999")
    monkeypatch.setenv("LLMBUS_DATABASE_URL", "postgresql+asyncpg://u:s3cret@h/db")
    monkeypatch.setenv("LLMBUS_MODEL", "org/Some-Model.v2")
    monkeypatch.setenv("LLMBUS_MAX_NUM_SEQS", "8")
    s = Settings()
    assert s.kafka_bootstrap == "127.0.0.1:9999"
    assert s.model == "org/Some-Model.v2"
    assert s.max_num_seqs == 8
    assert s.database_url is not None
    assert s.database_url.get_secret_value().endswith("@h/db")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.database_url)
    assert s.requests_topic == "llmbus.requests.org-Some-Model-v2"


def test_is_frozen() -> None:
    s = Settings()
    with pytest.raises(ValidationError):
        s.model = "other"  # type: ignore[misc]


def test_rejects_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBUS_POSTGRES_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        Settings()


def test_env_file_fills_what_environment_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmbus.cli import load_settings

    (tmp_path / "llmbus.env").write_text("export LLMBUS_KAFKA_BOOTSTRAP='127.0.0.1:1234'\n")
    monkeypatch.setenv("LLMBUS_STATE_DIR", str(tmp_path))
    assert load_settings().kafka_bootstrap == "127.0.0.1:1234"
    monkeypatch.setenv("LLMBUS_KAFKA_BOOTSTRAP", "127.0.0.1:4321")
    assert load_settings().kafka_bootstrap == "127.0.0.1:4321"


def test_request_topic_names_are_kafka_safe() -> None:
    assert requests_topic("p", "a/b c:d") == "p.requests.a-b-c-d"
