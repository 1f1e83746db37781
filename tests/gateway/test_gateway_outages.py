"""The gateway while Kafka or PostgreSQL is away: clean 503s, readiness says why, calls
made meanwhile are still audited, and service resumes by itself."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Bus
from tests.gateway.keys import create_key

pytestmark = pytest.mark.integration


async def test_kafka_then_postgres_away(isolated_bus: Bus) -> None:
    bus = isolated_bus
    bus.spawn_worker_process("gw-outage", step_s=0.01)
    # Keys stay cached through both outages (the default 30 s is shorter than this test).
    url = await bus.start_gateway({"LLMBUS_GATEWAY_KEY_CACHE_S": "600"})
    key = await create_key(bus, "outage")
    body = {
        "model": bus.settings.model,
        "messages": [{"role": "user", "content": "a b"}],
        "max_tokens": 4,
    }
    auth = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=120) as http:
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 200

        await asyncio.to_thread(bus.stack.kafka.stop)
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["kafka"] is False
        refused = await http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "service_unavailable"
        await asyncio.to_thread(bus.stack.kafka.start)
        for _ in range(60):  # the gateway's clients reconnect by themselves
            if (await http.post("/v1/chat/completions", json=body)).status_code == 200:
                break
            await asyncio.sleep(1)
        else:
            pytest.fail("no 200 within 60 s of Kafka's return")

        await asyncio.to_thread(bus.stack.postgres.stop)
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"] == {
            "kafka": True,
            "postgres": False,
        }
        # The key was verified minutes ago and is cached: chats go on; a key never seen
        # before cannot be checked and gets a clean 503, not a 500.
        during = await http.post("/v1/chat/completions", json=body)
        assert during.status_code == 200
        unknown = await http.get(
            "/v1/models", headers={"Authorization": "Bearer llmbus_0123456789abcdef_" + "x" * 43}
        )
        assert unknown.status_code == 503
        await asyncio.to_thread(bus.stack.postgres.start)

    # Calls made while the database was away were kept and written once it returned.
    db = create_async_engine(bus.stack.postgres.url("llmbus_reader"))
    try:
        for _ in range(60):
            async with db.connect() as conn:
                statuses = list(
                    (
                        await conn.execute(
                            text("SELECT status FROM gateway_calls WHERE tenant_id = 'outage'")
                        )
                    ).scalars()
                )
            if statuses.count(200) >= 3:
                break
            await asyncio.sleep(1)
    finally:
        await db.dispose()
    assert statuses.count(200) >= 3 and 503 in statuses, statuses
