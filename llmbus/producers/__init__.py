"""Producers: the client that publishes chat requests and awaits or streams the replies."""

from llmbus.producers.client import LlmbusClient

__all__ = ["LlmbusClient"]
