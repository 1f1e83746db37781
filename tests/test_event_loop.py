"""Which event loop the ``llmbus`` commands run on (``LLMBUS_EVENT_LOOP``)."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvloop

from llmbus import cli
from llmbus.settings import Settings


def loop_type_of_a_command(monkeypatch: pytest.MonkeyPatch) -> type[asyncio.AbstractEventLoop]:
    """Run ``cli.main`` with a command that records the loop it runs on."""
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def command(settings: Settings, args: argparse.Namespace) -> int:
        seen.append(type(asyncio.get_running_loop()))
        return 0

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=command)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 0
    return seen[0]


def test_commands_run_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMBUS_EVENT_LOOP", raising=False)
    assert issubclass(loop_type_of_a_command(monkeypatch), uvloop.Loop)


def test_asyncio_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMBUS_EVENT_LOOP", "asyncio")
    loop_type = loop_type_of_a_command(monkeypatch)
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="event_loop"):
        Settings(event_loop="trio")  # type: ignore[arg-type]
