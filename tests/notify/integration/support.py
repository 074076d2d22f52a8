"""Helpers for the notify integration tests: requests, waiting for states, reading the outbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc

from meshdev.testing.servers import TestTokens
from meshkit.events import unpack_event
from meshkit.server import App
from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import events_pb2, notify_pb2, notify_pb2_grpc

AUD = "tickettoken.notify"
BUYER = "buyer-1"
EMAIL = "ada@example.com"
PHONE = "+15551230001"
TICKET_VARS = {
    "event_name": "The Band: Fall Tour",
    "venue_name": "Grand Hall",
    "event_starts_at": "Fri 1 May 2026, 20:00",
    "ticket_id": "pay-1-t0",
    "mint_address": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
    "cluster": "devnet",
    "metadata_uri": "https://tkt.example/m/abc",
}

Start = Callable[..., Awaitable[App]]


def send_request(
    *,
    email: str = EMAIL,
    user_id: str = BUYER,
    template_id: str = "ticket_confirmation",
    variables: dict[str, str] | None = None,
    channel: int = notify_pb2.CHANNEL_EMAIL,
    key: str | None = None,
    **fields: Any,
) -> notify_pb2.SendNotificationRequest:
    recipient = fields.pop("recipient", None) or notify_pb2.Recipient(
        user_id=user_id, email=email, name="Ada Lovelace", locale="en-US"
    )
    if "inline" not in fields:
        fields["template_id"] = template_id
    return notify_pb2.SendNotificationRequest(
        idempotency_key=key or str(uuid.uuid4()),
        recipient=recipient,
        channel=channel,  # type: ignore[arg-type]
        variables=TICKET_VARS if variables is None else variables,
        **fields,
    )


@dataclass
class Client:
    app: App
    stub: notify_pb2_grpc.NotifyServiceStub
    tokens: TestTokens

    @property
    def service_md(self) -> tuple[tuple[str, str], ...]:
        return self.tokens.metadata(self.tokens.service("payment", aud=AUD))

    @property
    def admin_md(self) -> tuple[tuple[str, str], ...]:
        return self.tokens.metadata(self.tokens.user("admin-1", ["admin"], aud=AUD))

    def buyer_md(self, user: str = BUYER) -> tuple[tuple[str, str], ...]:
        return self.tokens.metadata(self.tokens.user(user, ["buyer"], aud=AUD))

    async def send(
        self, request: notify_pb2.SendNotificationRequest
    ) -> notify_pb2.SendNotificationResponse:
        reply: notify_pb2.SendNotificationResponse = await self.stub.SendNotification(
            request, metadata=self.service_md, timeout=20
        )
        return reply

    async def get(self, notification_id: str) -> notify_pb2.Notification:
        reply = await self.stub.GetNotification(
            notify_pb2.GetNotificationRequest(notification_id=notification_id),
            metadata=self.admin_md,
        )
        return reply.notification

    async def wait_status(
        self, notification_id: str, *statuses: int, timeout: float = 20.0
    ) -> notify_pb2.Notification:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            n = await self.get(notification_id)
            if n.status in statuses:
                return n
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{notification_id} still {notify_pb2.NotificationStatus.Name(n.status)}: "
                    f"{n.error_code} {n.error_message}"
                )
            await asyncio.sleep(0.05)

    async def set_preferences(self, preferences: notify_pb2.Preferences) -> None:
        await self.stub.SetPreferences(
            notify_pb2.SetPreferencesRequest(
                idempotency_key=str(uuid.uuid4()), preferences=preferences
            ),
            metadata=self.admin_md,
        )

    async def webhook(
        self, provider: str, payload: bytes, headers: dict[str, str], url: str = ""
    ) -> notify_pb2.HandleProviderWebhookResponse:
        reply: notify_pb2.HandleProviderWebhookResponse = await self.stub.HandleProviderWebhook(
            notify_pb2.HandleProviderWebhookRequest(
                webhook=common_pb2.ProviderWebhook(
                    provider=provider,
                    payload=payload,
                    headers={k.lower(): v for k, v in headers.items()},
                    url=url,
                    http_method="POST",
                )
            ),
            metadata=self.admin_md,
        )
        return reply


async def rows(app: App, sql: str, *args: Any) -> list[asyncpg.Record]:
    assert app.kit is not None
    async with app.kit.db.acquire() as conn:
        result: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return result


async def count(app: App, table: str) -> int:
    return int((await rows(app, f"SELECT count(*) AS n FROM {table}"))[0]["n"])


async def events_of(app: App) -> list[tuple[str, Any]]:
    """(event type, unpacked event) of every outbox event, oldest first."""
    found = []
    kinds = {
        e.DESCRIPTOR.full_name: e
        for e in (
            events_pb2.NotificationSent,
            events_pb2.NotificationDelivered,
            events_pb2.NotificationFailed,
        )
    }
    for row in await rows(app, "SELECT payload FROM outbox ORDER BY seq"):
        envelope = common_pb2.EventEnvelope.FromString(bytes(row["payload"]))
        found.append((envelope.event_type, unpack_event(envelope, kinds[envelope.event_type])))
    return found


async def call_retrying(fn: Callable[[], Awaitable[Any]], attempts: int = 200) -> Any:
    """Call until it does not answer ABORTED (the idempotency layer's "in progress")."""
    for _ in range(attempts):
        try:
            return await fn()
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.ABORTED:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("still ABORTED")
