"""The ``llmbus`` command as people run it, as subprocesses against the real stack."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import create_async_engine

from llmbus.consumers.engine import Engine
from llmbus.stack.local_stack import LocalStack
from tests.conftest import Bus
from tests.polling import ProcessOutput, eventually

pytestmark = pytest.mark.integration


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmbus.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def stack_env(stack: LocalStack) -> dict[str, str]:
    s = stack.settings
    return {
        **os.environ,
        "LLMBUS_STATE_DIR": str(s.state_dir),
        "LLMBUS_KAFKA_PORT": str(s.kafka_port),
        "LLMBUS_KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port),
        "LLMBUS_POSTGRES_PORT": str(s.postgres_port),
    }


async def test_up_when_running_says_so_and_succeeds(stack: LocalStack) -> None:
    code, out, err = await run_cli("up", env=stack_env(stack))
    assert code == 0, err
    assert "already running" in out
    assert f"source {stack.env_file}" in out
    assert "llmbus_writer" not in out, "credentials must not be printed"
    assert oct(stack.env_file.stat().st_mode & 0o777) == "0o600"


async def test_chat_command_answers_and_streams(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    env = bus.env()
    code, out, err = await run_cli(
        "chat", "What is the capital of France?", "--max-tokens", "24", env=env
    )
    assert code == 0, err
    assert "Paris" in out
    code, out, err = await run_cli(
        "chat", "--stream", "What is the capital of France?", "--max-tokens", "24", env=env
    )
    assert code == 0, err
    assert "Paris" in out


async def test_chat_command_reports_remote_errors(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    code, _, err = await run_cli("chat", "word " * 3000, env=bus.env())
    assert code == 1
    assert "context_length_exceeded" in err


async def test_database_roles_have_least_privilege(stack: LocalStack) -> None:
    """The auditor's role may insert and read but not rewrite history; analysts only read."""
    writer = create_async_engine(stack.postgres.url("llmbus_writer"))
    reader = create_async_engine(stack.postgres.url("llmbus_reader"))
    try:
        async with writer.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) >= 0 FROM results"))
            # The gateway's counters are the one exception: it increments and sweeps them.
            await conn.execute(text("DELETE FROM rate_usage WHERE minute < 0"))
            await conn.rollback()
            for stmt in (
                "DELETE FROM results",
                "DELETE FROM batch_events",
                "UPDATE results SET output = 'x'",
                "DROP TABLE results",
                "CREATE TABLE evil (x int)",
            ):
                with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                    await conn.execute(text(stmt))
                await conn.rollback()
        async with reader.connect() as conn:
            with pytest.raises(ProgrammingError, match="permission denied"):
                await conn.execute(
                    text(
                        "INSERT INTO results (request_id, status, finished_at, logged_at) "
                        "VALUES ('x', 'ok', now(), now())"
                    )
                )
            await conn.rollback()
            for table in ("api_keys", "api_key_revocations", "files", "rate_usage"):
                with pytest.raises(ProgrammingError, match="permission denied"):
                    await conn.execute(text(f"SELECT count(*) FROM {table}"))
                await conn.rollback()
            assert await conn.scalar(text("SELECT count(*) >= 0 FROM gateway_calls"))
    finally:
        await writer.dispose()
        await reader.dispose()


async def test_a_vllm_worker_stopped_by_sigterm_exits_cleanly(bus: Bus) -> None:
    worker = bus.spawn_worker_process(
        "clean-exit", engine=None, extra_env={"LLMBUS_LOG_LEVEL": "INFO"}
    )
    out = ProcessOutput(worker, b"serving")
    # vLLM's engine starts in ~30-40 s on 2 cores with the compiled model cached; 300 s
    # covers a cold cache on slow CI.
    await eventually(
        lambda: out.marked.is_set() or worker.poll() is not None, 300, "the vLLM worker serving"
    )
    assert out.marked.is_set(), out.text()[-3000:]
    async with bus.client() as client:
        result = await client.chat("Say hi.", max_tokens=4)
    assert result.completion.usage.completion_tokens > 0
    worker.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, 120)
    # The output closes with the process; 30 s covers its last lines' read.
    await eventually(out.ended.is_set, 30, "the worker's output closed")
    output = out.text()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output and "Exception ignored" not in output, output[-3000:]
