"""Test helpers: a small client around the real gRPC stub, localstripe calls, signed events."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
import stripe

from meshdev.standins.faultproxy import FaultProxy
from meshdev.testing.servers import TestTokens
from meshkit.server import App
from payment_service.domain.fees import Jurisdiction
from payment_service.store import venues
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import events_pb2, payment_pb2, payment_pb2_grpc

STRIPE_KEY = "sk_test_tickettoken_local"
WEBHOOK_SECRET = "whsec_test_tickettoken_local"
AUD = "tickettoken.payment"

VISA = "4242424242424242"
DECLINE_AT_CHARGE = "4000000000000341"
THREE_D_SECURE = "4000002500003155"

Metadata = tuple[tuple[str, str], ...]

LATE_CAPTURE_METRIC = "payment_late_capture_refunds_total"
CREATE_INTENT = ("POST", "/v1/payment_intents")

# Outbox topics: the full names of the contract's event messages.
SUCCEEDED = events_pb2.PaymentSucceeded.DESCRIPTOR.full_name
FAILED = events_pb2.PaymentFailed.DESCRIPTOR.full_name
REFUNDED = events_pb2.PaymentRefunded.DESCRIPTOR.full_name
PAYOUT_CREATED = events_pb2.PayoutCreated.DESCRIPTOR.full_name


async def register_webhook(
    localstripe: str, http_port: int, events: list[str] | None = None
) -> None:
    """Point localstripe's (single, overwritten) test webhook at this app's endpoint."""
    data: dict[str, Any] = {
        "url": f"http://127.0.0.1:{http_port}/webhooks/stripe",
        "secret": WEBHOOK_SECRET,
    }
    if events is not None:
        data["events"] = events
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{localstripe}/_config/webhooks/payment", json=data)
        response.raise_for_status()


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header, computed exactly as Stripe (and localstripe) do."""
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )


def event_payload(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    """A Stripe event body (the shape Stripe sends)."""
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "api_version": "2024-06-20",
            "data": {"object": obj},
        },
        sort_keys=True,
    ).encode()


@dataclass
class PaymentClient:
    app: App
    stub: payment_pb2_grpc.PaymentServiceStub
    tokens: TestTokens
    localstripe: str

    # -- tokens -------------------------------------------------------------------------------
    def buyer(self, sub: str = "buyer-1") -> Metadata:
        return self.tokens.metadata(self.tokens.user(sub, ["buyer"], aud=AUD))

    def admin(self, sub: str = "admin-1") -> Metadata:
        return self.tokens.metadata(self.tokens.user(sub, ["admin"], aud=AUD))

    def venue_admin(self, venues: list[str], sub: str = "va-1") -> Metadata:
        return self.tokens.metadata(
            self.tokens.user(sub, ["venue_admin"], aud=AUD, venue_ids=venues)
        )

    def service(self, name: str) -> Metadata:
        return self.tokens.metadata(self.tokens.service(name, aud=AUD))

    # -- requests ---------------------------------------------------------------------------
    @staticmethod
    def line(price: int = 10_000, quantity: int = 1, currency: str = "USD") -> payment_pb2.LineItem:
        return payment_pb2.LineItem(
            ticket_type_id="ga",
            description="General Admission",
            unit_price=common_pb2.Money(currency=currency, amount_minor=price),
            quantity=quantity,
        )

    def create_request(
        self,
        *,
        buyer: str = "buyer-1",
        pm: str = "pm_card_visa",
        venue: str = "venue-nash",
        order: str | None = None,
        price: int = 10_000,
        quantity: int = 1,
        currency: str = "USD",
        key: str | None = None,
        **extra: Any,
    ) -> payment_pb2.CreatePaymentRequest:
        extra.setdefault(
            "buyer_contact", common_pb2.ContactInfo(name="Ada", email="ada@example.com")
        )
        extra.setdefault(
            "event", payment_pb2.EventDetails(event_name="The Band", venue_name="Ryman")
        )
        return payment_pb2.CreatePaymentRequest(
            idempotency_key=key or str(uuid.uuid4()),
            order_id=order or f"order-{uuid.uuid4().hex[:10]}",
            venue_id=venue,
            event_id="event-1",
            buyer_id=buyer,
            line_items=[self.line(price, quantity, currency)],
            currency=currency,
            payment_method_id=pm,
            **extra,
        )

    async def create(self, md: Metadata | None = None, **kwargs: Any) -> payment_pb2.Payment:
        request = self.create_request(**kwargs)
        reply = await self.stub.CreatePayment(
            request, metadata=md or self.buyer(request.buyer_id), timeout=20
        )
        return reply.payment

    async def get(self, payment_id: str, md: Metadata | None = None) -> payment_pb2.Payment:
        reply = await self.stub.GetPayment(
            payment_pb2.GetPaymentRequest(payment_id=payment_id),
            metadata=md or self.admin(),
            timeout=10,
        )
        return reply.payment

    async def refund(
        self,
        payment_id: str,
        amount: int | None = None,
        *,
        md: Metadata | None = None,
        key: str | None = None,
        currency: str = "USD",
    ) -> payment_pb2.RefundPaymentResponse:
        request = payment_pb2.RefundPaymentRequest(
            idempotency_key=key or str(uuid.uuid4()),
            payment_id=payment_id,
            reason=payment_pb2.REFUND_REASON_REQUESTED_BY_CUSTOMER,
        )
        if amount is not None:
            request.amount.CopyFrom(common_pb2.Money(currency=currency, amount_minor=amount))
        reply: payment_pb2.RefundPaymentResponse = await self.stub.RefundPayment(
            request, metadata=md or self.admin(), timeout=20
        )
        return reply

    # -- localstripe ------------------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.localstripe, auth=(STRIPE_KEY, ""), timeout=10)

    async def payment_method(self, number: str) -> str:
        async with self._http() as http:
            response = await http.post(
                "/v1/payment_methods",
                data={
                    "type": "card",
                    "card[number]": number,
                    "card[exp_month]": "12",
                    "card[exp_year]": "2030",
                    "card[cvc]": "123",
                },
            )
            response.raise_for_status()
            return str(response.json()["id"])

    async def intents_for(self, **metadata: str) -> list[dict[str, Any]]:
        """PaymentIntents on localstripe whose metadata match (it deduplicates nothing)."""
        async with self._http() as http:
            response = await http.get("/v1/payment_intents", params={"limit": 10_000})
            response.raise_for_status()
            return [
                pi
                for pi in response.json()["data"]
                if all(pi.get("metadata", {}).get(k) == v for k, v in metadata.items())
            ]

    async def intent(self, intent_id: str) -> dict[str, Any]:
        async with self._http() as http:
            response = await http.get(f"/v1/payment_intents/{intent_id}")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    async def refunds_at_stripe(self, intent_id: str) -> list[dict[str, Any]]:
        """The refunds localstripe holds for this PaymentIntent's charge."""
        async with self._http() as http:
            response = await http.get(
                "/v1/refunds", params={"payment_intent": intent_id, "limit": 100}
            )
            response.raise_for_status()
            refunds: list[dict[str, Any]] = response.json()["data"]
            return refunds

    async def authenticate(self, intent_id: str, client_secret: str, success: bool = True) -> None:
        """Complete (or fail) 3-D Secure the way Stripe.js would on the buyer's device."""
        async with self._http() as http:
            response = await http.post(
                f"/v1/payment_intents/{intent_id}/_authenticate",
                data={"client_secret": client_secret, "success": "true" if success else "false"},
            )
            response.raise_for_status()

    # -- webhooks ---------------------------------------------------------------------------
    async def post_webhook(
        self, payload: bytes, signature: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{self.app.http_port}/webhooks/stripe",
                data=payload,
                headers=headers,
            ) as response,
        ):
            return response.status, await response.json()

    async def metric(self, sample: str) -> float | None:
        """The value of one sample (name with labels, as exposed) on the app's /metrics."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.app.ops_port}/metrics") as response,
        ):
            text = await response.text()
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return None

    # -- database ---------------------------------------------------------------------------
    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        assert self.app.kit is not None
        return await self.app.kit.db.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def events(self, topic: str | None = None) -> list[common_pb2.EventEnvelope]:
        """The outbox's event envelopes (of one type), oldest first."""
        rows = await self.fetch("SELECT topic, payload FROM outbox ORDER BY created_at, seq")
        return [
            common_pb2.EventEnvelope.FromString(r["payload"])
            for r in rows
            if topic is None or r["topic"] == topic
        ]


async def add_venue(
    app: App,
    venue_id: str,
    *,
    region: str = "TN",
    locality: str = "Nashville",
    entertainment_tax: bool = False,
    country: str = "US",
) -> None:
    assert app.kit is not None
    async with app.kit.db.acquire() as conn:
        await venues.upsert(
            conn,
            venue_id,
            Jurisdiction(
                country_code=country,
                region_code=region,
                locality=locality,
                entertainment_tax_applies=entertainment_tax,
            ),
        )


async def transitions(client: PaymentClient, payment_id: str) -> list[tuple[Any, ...]]:
    rows = await client.fetch(
        "SELECT from_status, to_status, cause_kind FROM payment_transitions "
        "WHERE payment_id = $1 ORDER BY id",
        uuid.UUID(payment_id),
    )
    return [tuple(r) for r in rows]


async def created_without_answer(
    client: PaymentClient, proxy: FaultProxy, **create: Any
) -> tuple[str, dict[str, Any]]:
    """A create whose Stripe answer was lost: (our PENDING payment id, Stripe's intent)."""
    lost = proxy.lose_answer(*CREATE_INTENT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create(**create)
    lost.release()
    # The outcome is unknown to the service: a transport failure, not a decline or a refusal.
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    # Exactly one create reached Stripe (the guard's retries were cut) and no answer got back.
    assert lost.forwarded == 1
    assert lost.dropped == lost.matched
    [row] = await client.fetch(
        "SELECT id, status, provider_payment_id FROM payments WHERE status = 'PENDING'"
    )
    assert row["provider_payment_id"] is None
    [intent] = await client.intents_for(payment_id=str(row["id"]))
    return str(row["id"]), intent


StartQuiet = Callable[..., Awaitable[PaymentClient]]
"""`client = await start_quiet(**settings)` (conftest): an app behind the Stripe fault proxy."""
