"""Who is calling: an llmbus API key, or (when configured) a JWT from the company's OIDC
provider. Tenant and user always come from the credential, never from the request body."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from llmbus.gateway.openai_errors import GatewayError
from llmbus.store.api_keys import KeyInfo, KeyStore

_MAX_CACHED_KEYS = 10_000
"""Bounds the cache's memory; a flood of distinct valid keys just costs lookups."""


@dataclass(frozen=True)
class Principal:
    subject: str
    """``key:<id>`` or ``jwt:<sub>``: what the call audit records."""
    key_id: str | None
    tenant_id: str
    user_id: str | None
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True)
class JwtConfig:
    issuer: str
    audience: str
    jwks_file: Path | None
    jwks_url: str | None
    tenant_claim: str
    user_claim: str


class Authenticator:
    def __init__(self, keys: KeyStore, *, cache_s: float, jwt_config: JwtConfig | None) -> None:
        self._keys = keys
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}
        self._jwt = jwt_config
        self._jwks: jwt.PyJWKSet | None = None
        self._jwks_client: jwt.PyJWKClient | None = None
        if jwt_config is not None:
            if jwt_config.jwks_file is not None:
                self._jwks = jwt.PyJWKSet.from_dict(json.loads(jwt_config.jwks_file.read_text()))
            elif jwt_config.jwks_url is not None:
                # PyJWKClient caches the key set and refetches on an unknown key id.
                self._jwks_client = jwt.PyJWKClient(jwt_config.jwks_url)

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise _unauthorized("missing bearer credentials (Authorization: Bearer <key>)")
        token = authorization[7:].strip()
        if token.startswith("llmbus_"):
            info = await self._key(token)
            if info is None:
                raise _unauthorized("invalid or revoked API key")
            return Principal(
                f"key:{info.key_id}", info.key_id, info.tenant_id, info.user_id, info.rpm, info.tpm
            )
        if self._jwt is not None:
            return self._from_jwt(token)
        raise _unauthorized("invalid API key")

    async def _key(self, token: str) -> KeyInfo | None:
        now = time.monotonic()
        cached = self._cache.get(token)
        if cached is not None and now - cached[0] < self._cache_s:
            return cached[1]
        info = await self._keys.verify(token)
        if len(self._cache) >= _MAX_CACHED_KEYS:
            self._cache.clear()
        self._cache[token] = (now, info)
        return info

    def _from_jwt(self, token: str) -> Principal:
        cfg = self._jwt
        assert cfg is not None
        try:
            header = jwt.get_unverified_header(token)
            key = self._signing_key(header.get("kid"))
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256", "ES256", "PS256", "EdDSA"],
                audience=cfg.audience,
                issuer=cfg.issuer,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"invalid token: {exc}") from None
        tenant = claims.get(cfg.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise _unauthorized(f"token has no {cfg.tenant_claim!r} claim")
        user = claims.get(cfg.user_claim)
        return Principal(f"jwt:{user}", None, tenant, str(user) if user else None, None, None)

    def _signing_key(self, kid: str | None) -> Any:
        if self._jwks is not None:
            if kid is None:
                raise jwt.InvalidTokenError("token has no key id")
            return self._jwks[kid].key
        assert self._jwks_client is not None
        return self._jwks_client.get_signing_key(kid).key if kid else None


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, "invalid_api_key", message, headers={"WWW-Authenticate": "Bearer"})
