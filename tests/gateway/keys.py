"""Creating gateway keys the way operators do: ``llmbus keys create``."""

from __future__ import annotations

from tests.conftest import Bus
from tests.test_cli import run_cli


async def create_key(bus: Bus, tenant: str, *extra: str) -> str:
    code, out, err = await run_cli("keys", "create", "--tenant", tenant, *extra, env=bus.env())
    assert code == 0, err
    key = out.strip()
    assert key.startswith("llmbus_") and "shown once" in err
    assert key not in err
    return key
