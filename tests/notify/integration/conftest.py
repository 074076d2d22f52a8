"""Fixtures for the notify integration tests: a real SMTP server (the dev kit's sink, in this
event loop), the SendGrid and Twilio stand-ins over HTTP, and the service in-process on port 0
against the session's real Postgres and Redis, called through real stubs.

The stand-ins' webhooks point at the started service's HTTP port, so receipts travel the way
the providers send them: signed POSTs to the service.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from meshdev.standins.sendgrid import DEV_API_KEY, SendGridServer
from meshdev.standins.smtp import SmtpSink
from meshdev.standins.twilio import DEV_ACCOUNT_SID, DEV_AUTH_TOKEN, DEV_PHONE_NUMBER, TwilioServer
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from notify_service.app import DEFINITION
from tests.notify.integration.support import Client, Start
from tickettoken.notify.v1 import notify_pb2_grpc

FAST = {
    "notify_worker_poll_s": 0.05,
    "notify_retry_base_s": 0.05,
    "notify_retry_max_s": 0.3,
    "notify_worker_lease_s": 20.0,
    "smtp_timeout_s": 5.0,
}


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[SmtpSink]:
    async with SmtpSink(tmp_path / "mail") as sink:
        yield sink


@pytest.fixture
async def sendgrid() -> AsyncIterator[SendGridServer]:
    async with SendGridServer(rate_limit=None) as server:
        yield server


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioServer]:
    async with TwilioServer() as server:
        yield server


def provider_settings(
    smtp: SmtpSink, sendgrid: SendGridServer, twilio: TwilioServer
) -> dict[str, Any]:
    return {
        "notify_email_providers": "smtp",
        "notify_sms_providers": "twilio",
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "sendgrid_api_key": DEV_API_KEY,
        "sendgrid_api_base": sendgrid.url,
        "sendgrid_webhook_public_key": sendgrid.public_key,
        "twilio_account_sid": DEV_ACCOUNT_SID,
        "twilio_auth_token": DEV_AUTH_TOKEN,
        "twilio_api_base": twilio.url,
        "twilio_from_number": DEV_PHONE_NUMBER,
    }


@pytest.fixture
def start_notify(
    app_factory: Any, smtp: SmtpSink, sendgrid: SendGridServer, twilio: TwilioServer
) -> Start:
    """`app = await start_notify(**settings)`: the service with every provider pointed at this
    test's SMTP sink and stand-ins (email through smtp alone unless overridden); the
    stand-ins' webhooks point at the app."""

    async def start(**overrides: Any) -> App:
        values = {**FAST, **provider_settings(smtp, sendgrid, twilio), **overrides}
        app: App = await app_factory(DEFINITION, **values)
        assert app.kit is not None
        sendgrid.webhook_url = app.kit.http.local_url("/webhooks/sendgrid")
        twilio.inbound_url = app.kit.http.local_url("/webhooks/twilio/inbound")
        return app

    return start


@pytest.fixture
async def notify_app(start_notify: Start) -> App:
    return await start_notify()


@pytest.fixture
async def client(notify_app: App, tokens: TestTokens) -> AsyncIterator[Client]:
    async with channel_for(notify_app) as channel:
        yield Client(notify_app, notify_pb2_grpc.NotifyServiceStub(channel), tokens)


@pytest.fixture
def connect(tokens: TestTokens) -> Any:
    """`async with connect(app) as client:` for apps a test starts itself."""
    import contextlib

    @contextlib.asynccontextmanager
    async def make(app: App) -> AsyncIterator[Client]:
        async with channel_for(app) as channel:
            yield Client(app, notify_pb2_grpc.NotifyServiceStub(channel), tokens)

    return make
