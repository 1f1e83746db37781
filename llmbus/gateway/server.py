"""Serving the gateway with uvicorn: loopback by default, HTTPS (TLS 1.2+) when given a
certificate and key. The only module importing uvicorn."""

from __future__ import annotations

import ssl
from typing import Any

import uvicorn

from llmbus.errors import SetupError
from llmbus.settings import Settings


class _Config(uvicorn.Config):
    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            # Older protocols have known weaknesses; OpenAI's own API refuses them too.
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def make_server(app: Any, settings: Settings) -> uvicorn.Server:
    cert, key = settings.gateway_tls_cert, settings.gateway_tls_key
    if (cert is None) != (key is None):
        raise SetupError("set both LLMBUS_GATEWAY_TLS_CERT and LLMBUS_GATEWAY_TLS_KEY, or neither")
    config = _Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
        log_level=settings.log_level.lower(),
        # Our JSON logs carry every call already (and the call audit has them in SQL).
        access_log=False,
        # A slow client cannot hold a connection open forever between requests.
        timeout_keep_alive=30,
        server_header=False,
    )
    return uvicorn.Server(config)
