"""DecodeTimes: a whole answer takes its decode time once, waits briefly for a late one,
and never keeps an id nobody will take."""

from __future__ import annotations

import asyncio

from llmbus.consumers.decode_times import WAIT_S, DecodeTimes


async def test_an_expected_time_is_taken_once_in_ms() -> None:
    times = DecodeTimes()
    times.expect("chatcmpl-a")
    times.finished("chatcmpl-a", 0.25)
    times.finished("chatcmpl-other", 1.0)  # nobody expects it: ignored
    assert await times.take_ms("chatcmpl-a") == 250.0
    assert await times.take_ms("chatcmpl-a") is None
    assert await times.take_ms("chatcmpl-other") is None


async def test_a_time_recorded_just_after_the_answer_is_still_taken() -> None:
    times = DecodeTimes()
    times.expect("cmpl-b")
    loop = asyncio.get_running_loop()
    loop.call_later(WAIT_S / 5, times.finished, "cmpl-b", 0.5)
    assert await times.take_ms("cmpl-b") == 500.0


async def test_no_time_gives_none_after_the_wait_and_discard_forgets() -> None:
    times = DecodeTimes()
    times.expect("c")
    assert await times.take_ms("c") is None
    times.expect("d")
    times.discard("d")
    times.finished("d", 1.0)
    assert await times.take_ms("d") is None
