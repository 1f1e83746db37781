"""The Kafka seam: the only package that imports aiokafka.

It maps aiokafka's exceptions to ``llmbus.errors`` (``raise ... from exc``) and hands
the rest of llmbus plain ``Record`` objects, so nothing above it knows the client library.
"""

from llmbus.bus.admin import ensure_topics
from llmbus.bus.consumer import (
    GroupConsumer,
    PartitionReader,
    RebalanceHandler,
    read_all,
    read_since,
)
from llmbus.bus.endpoint import Kafka, client_kwargs, describe
from llmbus.bus.producer import BusProducer
from llmbus.bus.record import Outgoing, Record, TopicPartition

__all__ = [
    "BusProducer",
    "GroupConsumer",
    "Kafka",
    "Outgoing",
    "PartitionReader",
    "RebalanceHandler",
    "Record",
    "TopicPartition",
    "client_kwargs",
    "describe",
    "ensure_topics",
    "read_all",
    "read_since",
]
