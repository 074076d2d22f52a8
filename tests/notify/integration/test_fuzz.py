"""The e2e property (tests/e2e/test_bad_input.py) against notify with every provider configured,
so random and mutated requests reach past the channel check into rendering, addresses, dedup,
consent and the queue: no INTERNAL, INVALID_ARGUMENT always with field violations, and a refusal
changes nothing. Delivery workers are off, so the tables change only by the calls themselves."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from meshdev.testing.servers import TestTokens
from meshkit.server import App
from tests.e2e.test_bad_input import SERVICES, Mesh, _check_method
from tests.notify.integration.support import Start

METHODS = list(SERVICES["notify"].methods)


@pytest.fixture
async def fuzz_app(start_notify: Start) -> App:
    return await start_notify(
        notify_email_providers="smtp,sendgrid", notify_workers=0, access_log=False
    )


@pytest.mark.timeout(300)
async def test_every_notify_rpc_answers_bad_input_clearly_with_providers_configured(
    fuzz_app: App, postgres_url: str, tokens: TestTokens
) -> None:
    mesh = Mesh({"notify": fuzz_app}, postgres_url, tokens)
    mesh.channels["notify"] = grpc.aio.insecure_channel(f"127.0.0.1:{fuzz_app.grpc_port}")
    loop = asyncio.get_running_loop()
    try:
        seen = {}
        for method in METHODS:
            seen[method.name] = await loop.run_in_executor(
                None, _check_method, mesh, "notify", method, loop
            )
    finally:
        await mesh.channels["notify"].close()
    # Valid sends got through to the queue at least once.
    assert seen["SendNotification"].get("OK", 0) >= 1, seen["SendNotification"]
    for name, codes in seen.items():
        assert "INVALID_ARGUMENT" in codes or "NOT_FOUND" in codes or name == "GetPreferences", (
            name,
            codes,
        )
