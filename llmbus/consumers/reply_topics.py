"""``ReplyTopics``: which topics a worker may write a request's answer to.

A request names its reply address, so without a rule anyone allowed to produce a request
could make workers write into any topic the workers can reach. The rule is a pattern
(``LLMBUS_REPLY_TOPIC_PATTERN``); a topic must also exist, because workers never create
topics and a send to a missing one would stall for the producer's metadata timeout.
"""

from __future__ import annotations

import asyncio
import re
import time

from llmbus.bus import BusProducer
from llmbus.schemas import ReplyTo

_RECHECK_S = 0.5
"""Unknown topics are looked up at most this often, whoever asks: a burst of requests
naming a missing topic costs one metadata request per half second, not one each."""
_CREATION_GRACE_S = 2.0
"""How long a topic may be missing before a request naming it is refused: a topic created
just before the request may not have a partition leader yet, and the broker leaves it out
of metadata until it has."""


class ReplyTopics:
    def __init__(self, producer: BusProducer, pattern: str) -> None:
        self._producer = producer
        self._pattern = re.compile(pattern)
        self._known: set[str] = set()
        """Topics seen to exist (topics are rarely deleted; a deleted one fails sends)."""
        self._looked_up_at = float("-inf")

    async def refusal(self, reply_to: ReplyTo) -> str | None:
        """Why the answer may not go to ``reply_to``, or None when it may. Raises
        BrokerUnavailableError when Kafka cannot say whether the topic exists."""
        topic = reply_to.topic
        if not self._pattern.fullmatch(topic):
            return (
                f"reply topic {topic!r} is not one this deployment answers on (pattern "
                f"{self._pattern.pattern!r}, LLMBUS_REPLY_TOPIC_PATTERN)"
            )
        if not await self._exists(topic):
            return f"reply topic {topic!r} does not exist; create it before naming it"
        return None

    async def _exists(self, topic: str) -> bool:
        give_up = time.monotonic() + _CREATION_GRACE_S
        while topic not in self._known:
            if time.monotonic() - self._looked_up_at >= _RECHECK_S:
                self._looked_up_at = time.monotonic()
                existing = await self._producer.existing_topics()
                self._known |= {t for t in existing if self._pattern.fullmatch(t)}
            elif time.monotonic() >= give_up:
                return False
            else:
                await asyncio.sleep(_RECHECK_S)
        return True
