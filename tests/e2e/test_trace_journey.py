"""One purchase is one trace, through the calls, the events and the queued work of the mesh.

payment, nft and notify run in-process as real servers on port 0 (each in its own schema), with
their event relays on and pointed at each other, payment against localstripe (behind the Stripe
idempotency stand-in), nft minting on its local LiteSVM chain, notify sending through the dev
kit's SMTP sink — the journey test's setup (tests/e2e/test_journey.py), built here for each test
so every event and log line of the test belongs to its one purchase. The purchase starts with
one CreatePayment carrying a W3C `traceparent`; then:

* PaymentSucceeded, the MintTickets call its relay makes, each TicketMinted (staged by a minter
  round long after MintTickets returned), the SendNotification calls nft's relay makes and each
  NotificationSent (staged by a delivery worker) carry that trace id;
* every access-log line of those calls and every log line of the three services that names the
  purchase (its payment, tickets or notifications) carries it too.

The same holds when the payment needs 3-D Secure and is completed by Stripe's webhook (an HTTP
request from localstripe without any trace of ours).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from meshdev.embedded import LocalStripe
from meshdev.standins.smtp import SmtpSink
from meshdev.testing.servers import TestTokens, channel_for, running_app
from meshkit.server import App
from nft_service.app import DEFINITION as NFT
from notify_service.app import DEFINITION as NOTIFY
from payment_service.app import DEFINITION as PAYMENT
from tests.payment.integration.support import (
    STRIPE_KEY,
    THREE_D_SECURE,
    WEBHOOK_SECRET,
    add_venue,
    register_webhook,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

pytestmark = pytest.mark.e2e

T = TypeVar("T")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
VENUE = "venue-trace"
WAIT_S = 60.0
RELAY = {
    "relay_poll_s": 0.02,
    "relay_backoff_base_s": 0.05,
    "relay_backoff_max_s": 0.5,
    "relay_max_attempts": 60,
}


@dataclass
class Journey:
    payment: App
    nft: App
    notify: App
    smtp: SmtpSink
    localstripe: str
    tokens: TestTokens
    pay: payment_pb2_grpc.PaymentServiceStub

    @property
    def apps(self) -> tuple[App, App, App]:
        return self.payment, self.nft, self.notify

    def buyer_md(self, buyer: str) -> tuple[tuple[str, str], ...]:
        token = self.tokens.user(buyer, ["buyer"], aud="tickettoken.payment")
        return (*self.tokens.metadata(token), ("traceparent", TRACEPARENT))

    async def stripe(self, method: str, path: str, data: dict[str, str]) -> dict[str, Any]:
        async with httpx.AsyncClient(
            base_url=self.localstripe, auth=(STRIPE_KEY, ""), timeout=10
        ) as http:
            response = await http.request(method, path, data=data)
            response.raise_for_status()
            found: dict[str, Any] = response.json()
            return found

    async def card(self, number: str) -> str:
        method = await self.stripe(
            "POST",
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2030",
                "card[cvc]": "123",
            },
        )
        return str(method["id"])

    async def buy(self, *, email: str, pm: str, tickets: int = 2) -> payment_pb2.Payment:
        buyer = f"buyer-{uuid.uuid4().hex[:8]}"
        request = payment_pb2.CreatePaymentRequest(
            idempotency_key=str(uuid.uuid4()),
            order_id=f"order-{uuid.uuid4().hex[:10]}",
            venue_id=VENUE,
            event_id="event-trace",
            buyer_id=buyer,
            line_items=[
                payment_pb2.LineItem(
                    ticket_type_id="ga",
                    description="General Admission",
                    unit_price=common_pb2.Money(currency="USD", amount_minor=5_000),
                    quantity=tickets,
                )
            ],
            currency="USD",
            payment_method_id=pm,
            buyer_contact=common_pb2.ContactInfo(
                name="Ada Lovelace", email=email, locale="en-US", time_zone="America/Chicago"
            ),
            event=payment_pb2.EventDetails(
                event_name="The Band: Fall Tour", venue_name="Ryman Auditorium"
            ),
        )
        request.event.starts_at.FromDatetime(datetime(2026, 10, 2, 1, 0, tzinfo=UTC))
        reply = await self.pay.CreatePayment(request, metadata=self.buyer_md(buyer), timeout=30)
        return reply.payment

    async def envelopes(self, app: App) -> list[common_pb2.EventEnvelope]:
        assert app.kit is not None
        rows = await app.kit.db.fetch("SELECT payload FROM outbox ORDER BY seq")
        return [common_pb2.EventEnvelope.FromString(bytes(r["payload"])) for r in rows]

    async def undelivered(self) -> int:
        """Events payment's and nft's relays have still to deliver (notify's have no consumer
        in this mesh)."""
        total = 0
        for app in (self.payment, self.nft):
            assert app.kit is not None
            rows = await app.kit.db.fetch(
                "SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL"
            )
            total += int(rows[0]["n"])
        return total


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `check` until it returns a value (not None); fail naming `what` after WAIT_S."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        found = await check()
        if found is not None:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in {WAIT_S:g}s: {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def journey(
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    tokens: TestTokens,
    tmp_path: Path,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> AsyncIterator[Journey]:
    base = {"postgres_url": postgres_url, "redis_url": redis_url, "dev_dir": dev_dir}
    async with AsyncExitStack() as stack:
        localstripe = stack.enter_context(LocalStripe(tmp_path / "localstripe"))
        smtp = await stack.enter_async_context(SmtpSink(tmp_path / "mail"))
        notify = await stack.enter_async_context(
            running_app(
                NOTIFY,
                **base,
                notify_email_providers="smtp",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
                smtp_timeout_s=5.0,
                notify_worker_poll_s=0.05,
            )
        )
        targets = {"notify_grpc_target": f"127.0.0.1:{notify.grpc_port}"}
        nft = await stack.enter_async_context(
            running_app(
                NFT,
                **base,
                **targets,
                **RELAY,
                solana_local_state_file=tmp_path / "chain.jsonl",
                nft_worker_poll_s=0.05,
                nft_wallet_check_interval_s=3600.0,
            )
        )
        targets["nft_grpc_target"] = f"127.0.0.1:{nft.grpc_port}"
        payment = await stack.enter_async_context(
            running_app(
                PAYMENT,
                **base,
                **targets,
                **RELAY,
                stripe_secret_key=STRIPE_KEY,
                stripe_webhook_secret=WEBHOOK_SECRET,
                stripe_api_base=localstripe.url,
                reconcile_interval_s=0,
                funds_hold_s=0,
                venue_tier_cache_s=0,
            )
        )
        await register_webhook(localstripe.url, payment.http_port)
        await add_venue(payment, VENUE)
        channel = await stack.enter_async_context(channel_for(payment))
        yield Journey(
            payment=payment,
            nft=nft,
            notify=notify,
            smtp=smtp,
            localstripe=localstripe.url,
            tokens=tokens,
            pay=payment_pb2_grpc.PaymentServiceStub(channel),
        )


def ticket_ids(payment: payment_pb2.Payment) -> list[str]:
    return [t for line in payment.line_items for t in line.ticket_ids]


async def completed(journey: Journey, payment: payment_pb2.Payment, email: str) -> None:
    """Wait until one confirmation per ticket is in the sink, every notification is SENT and
    payment's and nft's relays have delivered what they staged."""
    count = len(ticket_ids(payment))

    async def mail() -> bool | None:
        kept = [m for m in journey.smtp.messages() if email in m.rcpt_tos]
        return True if len(kept) >= count else None

    await eventually(mail, "a confirmation email per ticket")

    async def quiet() -> bool | None:
        sent = [e for e in await journey.envelopes(journey.notify) if "Sent" in e.event_type]
        return True if len(sent) >= count and await journey.undelivered() == 0 else None

    await eventually(quiet, "NotificationSent per ticket, every event delivered")


def check_one_trace(
    journey: Journey,
    payment: payment_pb2.Payment,
    envelopes: dict[str, list[common_pb2.EventEnvelope]],
    lines: list[dict[str, Any]],
) -> None:
    tickets = ticket_ids(payment)
    # Events: each one of the purchase, in its trace (a span of the service that staged it).
    kinds: dict[str, list[str]] = {}
    for service, found in envelopes.items():
        for envelope in found:
            version, trace_id, span_id, flags = envelope.trace.traceparent.split("-")
            assert (version, trace_id, flags) == ("00", TRACE_ID, "01"), (service, envelope)
            assert span_id != CALLER_SPAN
            kinds.setdefault(service, []).append(envelope.event_type.rsplit(".", 1)[1])
    assert kinds["payment"] == ["PaymentSucceeded"]
    assert sorted(kinds["nft"]) == ["TicketMinted"] * len(tickets)
    assert sorted(kinds["notify"]) == ["NotificationSent"] * len(tickets)
    minted = {e.aggregate_id for e in envelopes["nft"]}
    assert minted == set(tickets)

    # Calls: CreatePayment, MintTickets (payment's relay), SendNotification (nft's relay).
    calls = [
        (line["service"], line["grpc_method"], line["trace_id"])
        for line in lines
        if line["logger"] == "meshkit.access"
        and line["grpc_method"] in ("CreatePayment", "MintTickets", "SendNotification")
    ]
    assert ("payment", "CreatePayment", TRACE_ID) in calls
    assert ("nft", "MintTickets", TRACE_ID) in calls
    assert [c for c in calls if c[1] == "SendNotification"] == [
        ("notify", "SendNotification", TRACE_ID)
    ] * len(tickets)
    assert all(trace_id == TRACE_ID for _, _, trace_id in calls), calls

    # Log lines: every line of the three services that names the purchase carries its trace.
    notifications = {e.aggregate_id for e in envelopes["notify"]}
    ours = {payment.id, *tickets, *notifications}
    named = [
        line
        for line in lines
        if line["logger"].split(".")[0] in ("payment_service", "nft_service", "notify_service")
        and {
            str(line.get("payment_id")),
            str(line.get("ticket_id")),
            str(line.get("notification_id")),
        }
        & ours
    ]
    assert {line["trace_id"] for line in named} == {TRACE_ID}, named
    by_service = {line["logger"].split(".")[0] for line in named}
    assert {"nft_service", "notify_service"} <= by_service
    worker_lines = {line["message"] for line in named}
    assert {"ticket minted", "notification accepted", "notification sent"} <= worker_lines


async def outboxes(journey: Journey) -> dict[str, list[common_pb2.EventEnvelope]]:
    return {
        "payment": await journey.envelopes(journey.payment),
        "nft": await journey.envelopes(journey.nft),
        "notify": await journey.envelopes(journey.notify),
    }


def flushed(journey: Journey, log_lines: Callable[[], list[dict[str, Any]]]) -> list[Any]:
    for app in journey.apps:
        if app.access_log is not None:
            app.access_log.flush()
    return log_lines()


async def test_a_purchase_paid_at_once_is_one_trace_through_queues_and_services(
    journey: Journey, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    payment = await journey.buy(email=email, pm="pm_card_visa")
    assert payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
    await completed(journey, payment, email)
    check_one_trace(journey, payment, await outboxes(journey), flushed(journey, log_lines))


async def test_a_purchase_completed_by_stripes_webhook_is_one_trace_too(
    journey: Journey, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    payment = await journey.buy(email=email, pm=await journey.card(THREE_D_SECURE))
    assert payment.status == payment_pb2.PAYMENT_STATUS_REQUIRES_ACTION
    # 3-D Secure completed on the buyer's device: localstripe then posts payment_intent.succeeded
    # to payment's webhook endpoint, a request without any trace of ours.
    await journey.stripe(
        "POST",
        f"/v1/payment_intents/{payment.provider_payment_id}/_authenticate",
        {"client_secret": payment.client_secret, "success": "true"},
    )
    await completed(journey, payment, email)
    lines = flushed(journey, log_lines)
    check_one_trace(journey, payment, await outboxes(journey), lines)
    [settled] = [line for line in lines if line["message"] == "payment intent settled by webhook"]
    assert settled["payment_id"] == payment.id and settled["trace_id"] == TRACE_ID
