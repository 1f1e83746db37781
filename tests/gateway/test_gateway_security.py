"""Who may call the gateway, how often, and over what: keys, revocation, rate limits,
JWTs from an OIDC provider, TLS. Real gateway processes on the shared stack."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import ssl
import time
from pathlib import Path

import httpx
import jwt
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from llmbus.consumers.engine import Engine
from tests.conftest import Bus
from tests.gateway.keys import create_key
from tests.test_cli import run_cli

pytestmark = pytest.mark.integration


async def test_missing_wrong_and_revoked_keys_are_refused(bus: Bus) -> None:
    url = await bus.start_gateway({"LLMBUS_GATEWAY_KEY_CACHE_S": "0.5"})
    key = await create_key(bus, "auth")
    async with httpx.AsyncClient(base_url=url) as http:
        for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"},
                        {"Authorization": f"Bearer {key[:-1]}x"}):  # fmt: skip
            refused = await http.get("/v1/models", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["type"] == "authentication_error"
        ok = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200

        key_id = key.split("_")[1]
        code, out, err = await run_cli("keys", "revoke", key_id, env=bus.env())
        assert code == 0, err
        code, out, _ = await run_cli("keys", "list", "--all", env=bus.env())
        assert f"{key_id}  tenant=auth" in out and "revoked" in out
        await asyncio.sleep(0.6)  # past the gateway's key cache
        revoked = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert revoked.status_code == 401
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()


async def test_rate_limits_answer_429_with_retry_after(bus: Bus, engine: Engine) -> None:
    await bus.start_worker(engine)
    url = await bus.start_gateway()
    other_replica = await bus.start_gateway()
    model = bus.settings.model
    msg = [{"role": "user", "content": "hi"}]
    key = await create_key(bus, "rl", "--rpm", "2")
    slow = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    same_key = openai.AsyncOpenAI(base_url=f"{other_replica}/v1", api_key=key, max_retries=0)
    # One call on each replica: the key's limit is shared, so the third call is refused.
    await slow.chat.completions.create(model=model, messages=msg, max_tokens=2)
    await same_key.chat.completions.create(model=model, messages=msg, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as limited:
        await slow.chat.completions.create(model=model, messages=msg, max_tokens=2)
    retry_after = int(limited.value.response.headers["retry-after"])
    assert 1 <= retry_after <= 90  # the shared sliding-window counter: see store/rate_usage.py
    assert limited.value.code == "rate_limit_exceeded"

    thrifty = openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=await create_key(bus, "rl", "--tpm", "100"), max_retries=0
    )
    await thrifty.chat.completions.create(model=model, messages=msg, max_tokens=60)
    with pytest.raises(openai.RateLimitError, match="tokens per minute"):
        await thrifty.chat.completions.create(model=model, messages=msg, max_tokens=60)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serves_https_and_refuses_old_protocols(bus: Bus, tmp_path: Path) -> None:
    cert, key_file = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    url = await bus.start_gateway(
        {"LLMBUS_GATEWAY_TLS_CERT": str(cert), "LLMBUS_GATEWAY_TLS_KEY": str(key_file)},
        scheme="https",
        verify=trust,
    )
    key = await create_key(bus, "tls")
    async with httpx.AsyncClient(base_url=url, verify=trust) as http:
        ok = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
    with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
        async with httpx.AsyncClient() as http:
            await http.get(url.replace("https", "http") + "/healthz")
    old = ssl.create_default_context(cafile=str(cert))
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(verify=old) as http:
            await http.get(f"{url}/healthz")


async def test_jwt_bearer_tokens_map_claims_to_tenant_and_user(bus: Bus, tmp_path: Path) -> None:
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    url = await bus.start_gateway(
        {
            "LLMBUS_JWT_ISSUER": "https://idp.example.internal",
            "LLMBUS_JWT_AUDIENCE": "llmbus",
            "LLMBUS_JWT_JWKS_FILE": str(tmp_path / "jwks.json"),
            "LLMBUS_JWT_TENANT_CLAIM": "org",
        }
    )

    def token(**overrides: object) -> str:
        claims = {
            "iss": "https://idp.example.internal",
            "aud": "llmbus",
            "sub": "alice",
            "org": "acme",
            "exp": int(time.time()) + 300,
            **overrides,
        }
        return jwt.encode(claims, signing, algorithm="RS256", headers={"kid": "k1"})

    async with httpx.AsyncClient(base_url=url) as http:
        good = await http.get("/v1/models", headers={"Authorization": f"Bearer {token()}"})
        assert good.status_code == 200
        for bad in (
            token(exp=int(time.time()) - 10),
            token(aud="someone-else"),
            token(iss="https://evil.example"),
            token(org=None),
            jwt.encode({"sub": "x"}, "s" * 32, algorithm="HS256", headers={"kid": "k1"}),
        ):
            refused = await http.get("/v1/models", headers={"Authorization": f"Bearer {bad}"})
            assert refused.status_code == 401, refused.text
