"""Finals this worker produced recently, so a redelivered or retried request id is answered
again from memory instead of being recomputed (and never reaches vLLM twice)."""

from __future__ import annotations

from collections import OrderedDict

Headers = list[tuple[str, bytes]]

DEFAULT_CAPACITY = 10_000
"""About a few minutes of traffic at full speed; each entry is one final (a few KiB)."""


class RecentFinals:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._finals: OrderedDict[str, tuple[bytes, Headers]] = OrderedDict()

    def put(self, request_id: str, value: bytes, headers: Headers) -> None:
        self._finals[request_id] = (value, headers)
        self._finals.move_to_end(request_id)
        while len(self._finals) > self._capacity:
            self._finals.popitem(last=False)

    def get(self, request_id: str) -> tuple[bytes, Headers] | None:
        return self._finals.get(request_id)

    def __len__(self) -> int:
        return len(self._finals)
