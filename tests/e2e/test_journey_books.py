"""The purchase journey into the venue's books: payments made through the mesh appear in
QuickBooks as sales receipts once each, and their refunds as refund receipts.

payment, nft, notify and integration run in-process as real servers on port 0 (as in
test_journey.py), payment's relay pointed at integration; the venue connected its QuickBooks
company (the stand-in over HTTP) through integration's OAuth. The buyer's marketing consent
(CreatePayment) decides whether they also become a QuickBooks customer.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from integration_service.app import DEFINITION as INTEGRATION
from meshdev.embedded import LocalStripe
from meshdev.standins import quickbooks as qb
from meshdev.standins.quickbooks import QuickBooksServer
from meshdev.standins.smtp import SmtpSink
from meshdev.testing.servers import TestTokens, channel_for, running_app
from nft_service.app import DEFINITION as NFT
from notify_service.app import DEFINITION as NOTIFY
from payment_service.app import DEFINITION as PAYMENT
from tests.e2e.test_journey import (
    RELAY,
    VENUE,
    Mesh,
    email_contact,
    event_details,
    eventually,
    settled,
    ticket_ids,
)
from tests.integration.integration.support import REDIRECT, Client
from tests.payment.integration.support import (
    STRIPE_KEY,
    WEBHOOK_SECRET,
    add_venue,
    register_webhook,
)
from tickettoken.integration.v1 import integration_pb2 as ipb
from tickettoken.integration.v1 import integration_pb2_grpc
from tickettoken.nft.v1 import nft_pb2_grpc
from tickettoken.notify.v1 import notify_pb2_grpc
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass
class Books:
    mesh: Mesh
    quickbooks: QuickBooksServer


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def books(
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    tokens: TestTokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Books]:
    work = tmp_path_factory.mktemp("books")
    base = {"postgres_url": postgres_url, "redis_url": redis_url, "dev_dir": dev_dir}
    async with AsyncExitStack() as stack:
        localstripe = stack.enter_context(LocalStripe(work / "localstripe"))
        smtp = await stack.enter_async_context(SmtpSink(work / "mail"))
        quickbooks = await stack.enter_async_context(QuickBooksServer())
        notify = await stack.enter_async_context(
            running_app(
                NOTIFY,
                **base,
                notify_email_providers="smtp",
                smtp_host=smtp.host,
                smtp_port=smtp.port,
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
                solana_local_state_file=work / "chain.jsonl",
                nft_worker_poll_s=0.05,
                nft_wallet_check_interval_s=3600.0,
            )
        )
        targets["nft_grpc_target"] = f"127.0.0.1:{nft.grpc_port}"
        integration = await stack.enter_async_context(
            running_app(
                INTEGRATION,
                **base,
                integration_redirect_uris=REDIRECT,
                integration_refresh_interval_s=0,
                quickbooks_client_id=qb.DEV_CLIENT_ID,
                quickbooks_client_secret=qb.DEV_CLIENT_SECRET,
                quickbooks_verifier_token=qb.DEV_VERIFIER_TOKEN,
                quickbooks_discovery_url=quickbooks.discovery_url,
                quickbooks_api_base=quickbooks.url,
            )
        )
        targets["integration_grpc_target"] = f"127.0.0.1:{integration.grpc_port}"
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
                refund_rate_limit_per_minute=1000,
            )
        )
        await register_webhook(localstripe.url, payment.http_port)
        await add_venue(payment, VENUE)
        channels = [
            await stack.enter_async_context(channel_for(app))
            for app in (payment, nft, notify, integration)
        ]
        venue_admin = Client(
            integration, integration_pb2_grpc.IntegrationServiceStub(channels[3]), tokens
        )
        await venue_admin.dance(
            ipb.PROVIDER_QUICKBOOKS, venue=VENUE, md=venue_admin.md(venues=(VENUE,))
        )
        mesh = Mesh(
            payment=payment,
            nft=nft,
            notify=notify,
            smtp=smtp,
            localstripe=localstripe.url,
            tokens=tokens,
            pay=payment_pb2_grpc.PaymentServiceStub(channels[0]),
            mint=nft_pb2_grpc.NftServiceStub(channels[1]),
            tell=notify_pb2_grpc.NotifyServiceStub(channels[2]),
        )
        yield Books(mesh, quickbooks)


async def buy(mesh: Mesh, *, tickets: int, consent: bool) -> tuple[payment_pb2.Payment, str]:
    contact = email_contact()
    buyer = f"buyer-{uuid.uuid4().hex[:8]}"
    request = payment_pb2.CreatePaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        order_id=f"order-{uuid.uuid4().hex[:10]}",
        venue_id=VENUE,
        event_id="event-fall-tour",
        buyer_id=buyer,
        line_items=[
            payment_pb2.LineItem(
                ticket_type_id="ga",
                description="General Admission",
                unit_price={"currency": "USD", "amount_minor": 5_000},
                quantity=tickets,
            )
        ],
        currency="USD",
        payment_method_id="pm_card_visa",
        buyer_contact=contact,
        event=event_details(),  # nft refuses a mint without the event's facts
        marketing_consent=consent,
    )
    reply = await mesh.pay.CreatePayment(
        request, metadata=mesh.md("payment", buyer, "buyer"), timeout=30
    )
    assert reply.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
    return reply.payment, contact.email


def receipts(quickbooks: QuickBooksServer, entity: str, reference: str) -> list[dict[str, object]]:
    return [r for r in quickbooks.records(entity) if r.get("PrivateNote") == reference]


async def test_payments_and_refunds_reach_quickbooks_once_each(books: Books) -> None:
    mesh, quickbooks = books.mesh, books.quickbooks
    bought = [await buy(mesh, tickets=n, consent=n == 2) for n in (1, 2, 3)]

    async def all_receipts() -> bool | None:
        found = [receipts(quickbooks, "SalesReceipt", p.id) for p, _ in bought]
        return True if all(found) else None

    await eventually(all_receipts, "a sales receipt per payment")
    for payment, _ in bought:
        [receipt] = receipts(quickbooks, "SalesReceipt", payment.id)
        assert receipt["TotalAmt"] == Decimal(payment.total.amount_minor) / 100
    # Only the buyer who agreed to marketing is a QuickBooks customer.
    consenting = bought[1][1].lower()
    assert [c["DisplayName"] for c in quickbooks.records("Customer")] == [consenting]

    paid, _ = bought[2]
    refund = await mesh.refund(paid.id, tickets=tuple(ticket_ids(paid)[:1]))

    async def refund_receipt() -> bool | None:
        return True if receipts(quickbooks, "RefundReceipt", refund.id) else None

    await eventually(refund_receipt, "a refund receipt")
    [back] = receipts(quickbooks, "RefundReceipt", refund.id)
    assert back["TotalAmt"] == Decimal(refund.amount.amount_minor) / 100

    # After every relay delivered, nothing was written twice.
    await settled(mesh)
    assert quickbooks.duplicates() == {"SalesReceipt": {}, "RefundReceipt": {}}
    assert len(quickbooks.records("SalesReceipt")) == 3
    assert len(quickbooks.records("RefundReceipt")) == 1
