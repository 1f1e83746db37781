"""The OpenAI-compatible HTTP door: ``llmbus gateway``.

It holds no model: it authenticates, limits, publishes to Kafka through ``LlmbusClient``
and answers in OpenAI's shapes. Only ``server.py`` imports uvicorn.
"""
