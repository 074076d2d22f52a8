"""Fixtures for the payment service tests: a real localstripe, the service over real gRPC.

One localstripe process serves the whole session (a third-party stateful Stripe server: the
official `stripe` SDK in the service talks to it over HTTP, and it delivers signed webhooks to
the service's HTTP endpoint). Each test gets its own service instance in a fresh schema, and
its ledger is checked for every invariant when the test ends. A test that needs the network to
misbehave puts a `stripe_proxy` (meshdev.standins.faultproxy) between the two.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshdev.embedded import LocalStripe
from meshdev.standins.faultproxy import FaultProxy
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from payment_service.app import DEFINITION
from payment_service.store import ledger
from tests.payment.integration.support import (
    STRIPE_KEY,
    WEBHOOK_SECRET,
    PaymentClient,
    StartQuiet,
    add_venue,
    register_webhook,
)
from tickettoken.payment.v1 import payment_pb2_grpc

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a localstripe server started for this test session."""
    with LocalStripe(tmp_path_factory.mktemp("localstripe")) as server:
        yield server.url


@pytest.fixture
async def stripe_proxy(localstripe: str) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of localstripe; start the service with
    `stripe_api_base=stripe_proxy.url` to send its Stripe traffic through it. Request it
    before `start_payment` so it outlives the apps (torn down after them)."""
    async with FaultProxy(localstripe) as proxy:
        yield proxy


AppFactory = Callable[..., Awaitable[App]]


@pytest.fixture
async def start_payment(
    app_factory: AppFactory, localstripe: str
) -> AsyncIterator[Callable[..., Awaitable[App]]]:
    """`app = await start_payment(**settings)`: the service against localstripe, its webhook
    endpoint registered there; every started app's ledger is checked at teardown."""
    started: list[App] = []

    async def start(register: bool | None = True, **overrides: Any) -> App:
        values: dict[str, Any] = {
            "stripe_secret_key": STRIPE_KEY,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_api_base": localstripe,
            "reconcile_interval_s": 0,
            "funds_hold_s": 0,
            "venue_tier_cache_s": 0,
            "refund_rate_limit_per_minute": 1000,
        }
        values.update(overrides)
        app = await app_factory(DEFINITION, **values)
        # localstripe keeps one test webhook: point it at this app, or (register=False) let it
        # deliver nothing, so a test can play Stripe's deliveries itself; None leaves it to the
        # app (STRIPE_DEV_REGISTER_WEBHOOK).
        if register is not None:
            await register_webhook(localstripe, app.http_port, None if register else ["none"])
        started.append(app)
        return app

    yield start
    for app in started:
        assert app.kit is not None
        async with app.kit.db.acquire() as conn:
            problems = await ledger.check(conn)
        assert problems == [], problems


@pytest.fixture
async def app(start_payment: Callable[..., Awaitable[App]]) -> App:
    return await start_payment()


@pytest.fixture
async def client(app: App, tokens: TestTokens, localstripe: str) -> AsyncIterator[PaymentClient]:
    async with channel_for(app) as channel:
        yield PaymentClient(
            app=app,
            stub=payment_pb2_grpc.PaymentServiceStub(channel),
            tokens=tokens,
            localstripe=localstripe,
        )


@pytest.fixture
async def venue(app: App) -> str:
    """A Nashville venue (state 7 %, local 2.25 %, no entertainment tax)."""
    await add_venue(app, "venue-nash")
    return "venue-nash"


@pytest.fixture
async def start_quiet(
    stripe_proxy: FaultProxy, start_payment: AppFactory, tokens: TestTokens, localstripe: str
) -> AsyncIterator[StartQuiet]:
    """`client = await start_quiet(**settings)`: an app whose Stripe calls go through the proxy
    and that gets no webhook deliveries from localstripe (the test plays Stripe). The client's
    own localstripe calls (to inspect Stripe's state) go to localstripe directly."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**settings: object) -> PaymentClient:
            values: dict[str, object] = {
                "stripe_api_base": stripe_proxy.url,
                # The faults injected here are Stripe health failures to the kit guard, whose
                # breaker state lives in Redis shared by every test of the session: keep it out
                # of this (retries stay on, with the service's own policy).
                "provider_policies": json.dumps({"stripe": {"breaker": False}}),
            }
            values.update(settings)
            app = await start_payment(register=False, **values)
            await add_venue(app, "venue-nash")
            channel = await stack.enter_async_context(channel_for(app))
            return PaymentClient(
                app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
            )

        try:
            yield start
        finally:
            # A failed test must not leave a create held at the proxy while its app stops.
            stripe_proxy.release_all()
