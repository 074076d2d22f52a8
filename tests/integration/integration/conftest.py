"""Fixtures for the integration service's tests: the Square, QuickBooks and Mailchimp stand-ins
and the fast Stripe stand-in over HTTP (in this event loop), and the service in-process on port
0 against the session's real Postgres and Redis, called through real stubs."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from integration_service.app import DEFINITION
from meshdev.standins import mailchimp as mc
from meshdev.standins import quickbooks as qb
from meshdev.standins import square as sq
from meshdev.standins.mailchimp import MailchimpServer
from meshdev.standins.quickbooks import QuickBooksServer
from meshdev.standins.square import SquareServer
from meshdev.standins.stripe import StandInServer, fast_app
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from tests.integration.integration.support import REDIRECT, Client, Start
from tickettoken.integration.v1 import integration_pb2_grpc

# squareup's models read pydantic's deprecated `__fields__`; python-quickbooks warns on import.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def quiet_sdks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@pytest.fixture
async def square() -> AsyncIterator[SquareServer]:
    async with SquareServer() as server:
        yield server


@pytest.fixture
async def quickbooks() -> AsyncIterator[QuickBooksServer]:
    async with QuickBooksServer() as server:
        yield server


@pytest.fixture
async def mailchimp() -> AsyncIterator[MailchimpServer]:
    async with MailchimpServer() as server:
        yield server


@pytest.fixture
async def stripe_api() -> AsyncIterator[StandInServer]:
    async with StandInServer(fast_app()) as server:
        yield server


def provider_settings(
    square: SquareServer | None = None,
    quickbooks: QuickBooksServer | None = None,
    mailchimp: MailchimpServer | None = None,
    stripe_url: str = "",
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "integration_redirect_uris": REDIRECT,
        "integration_refresh_interval_s": 0,
    }
    if square is not None:
        values |= {
            "square_application_id": sq.DEV_APPLICATION_ID,
            "square_application_secret": sq.DEV_APPLICATION_SECRET,
            "square_webhook_signature_key": sq.DEV_SIGNATURE_KEY,
            "square_api_base": square.url,
        }
    if quickbooks is not None:
        values |= {
            "quickbooks_client_id": qb.DEV_CLIENT_ID,
            "quickbooks_client_secret": qb.DEV_CLIENT_SECRET,
            "quickbooks_verifier_token": qb.DEV_VERIFIER_TOKEN,
            "quickbooks_discovery_url": quickbooks.discovery_url,
            "quickbooks_api_base": quickbooks.url,
        }
    if mailchimp is not None:
        values |= {
            "mailchimp_client_id": mc.DEV_CLIENT_ID,
            "mailchimp_client_secret": mc.DEV_CLIENT_SECRET,
            "mailchimp_login_base": mailchimp.url,
        }
    if stripe_url:
        values["stripe_api_base"] = stripe_url
    return values


@pytest.fixture
def start_integration(
    app_factory: Any,
    square: SquareServer,
    quickbooks: QuickBooksServer,
    mailchimp: MailchimpServer,
    stripe_api: StandInServer,
) -> Start:
    """`app = await start_integration(**settings)`: the service with every provider pointed at
    this test's stand-ins."""

    async def start(**overrides: Any) -> App:
        values = {
            **provider_settings(square, quickbooks, mailchimp, stripe_api.url),
            **overrides,
        }
        app: App = await app_factory(DEFINITION, **values)
        return app

    return start


@pytest.fixture
async def integration_app(start_integration: Start) -> App:
    return await start_integration()


@pytest.fixture
def connect(tokens: TestTokens) -> Any:
    """`async with connect(app) as client:`."""
    import contextlib

    @contextlib.asynccontextmanager
    async def make(app: App) -> AsyncIterator[Client]:
        async with channel_for(app) as channel:
            yield Client(app, integration_pb2_grpc.IntegrationServiceStub(channel), tokens)

    return make


@pytest.fixture
async def client(integration_app: App, connect: Any) -> AsyncIterator[Client]:
    async with connect(integration_app) as made:
        yield made
