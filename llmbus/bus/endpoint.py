"""How to reach Kafka: bootstrap servers plus the security settings every client honours.

``KafkaEndpoint`` (in ``llmbus.settings``) is plain configuration; this module turns it
into aiokafka's keyword arguments, so the rest of the bus never handles credentials.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from llmbus.settings import KafkaEndpoint

Kafka = str | KafkaEndpoint
"""A bare bootstrap string means PLAINTEXT (loopback stacks, tests)."""


def describe(kafka: Kafka) -> str:
    """For messages and logs: servers and protocol, never credentials."""
    if isinstance(kafka, str):
        return kafka
    return f"{kafka.bootstrap} ({kafka.security_protocol})"


def client_kwargs(kafka: Kafka) -> dict[str, Any]:
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    if kafka.security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = kafka.sasl_mechanism
        kwargs["sasl_plain_username"] = kafka.sasl_username
        kwargs["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return kwargs
