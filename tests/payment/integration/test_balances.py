"""GetVenueBalance and RequestPayout: hold, reserve, limits, Stripe payouts and reversals.

localstripe pays out in EUR only, so these venues sell in EUR; the rules are per currency.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from tests.payment.integration.support import PAYOUT_CREATED, PaymentClient, add_venue
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

P = payment_pb2
Start = Callable[..., Awaitable[App]]


def payout_request(
    amount: int, currency: str = "EUR", instant: bool = False
) -> P.RequestPayoutRequest:
    return P.RequestPayoutRequest(
        idempotency_key=str(uuid.uuid4()),
        venue_id="venue-nash",
        amount=common_pb2.Money(currency=currency, amount_minor=amount),
        instant=instant,
        statement_descriptor="TICKETTOKEN",
    )


async def balance(client: PaymentClient, currency: str = "EUR") -> P.VenueBalance:
    reply = await client.stub.GetVenueBalance(
        P.GetVenueBalanceRequest(venue_id="venue-nash", currency=currency),
        metadata=client.venue_admin(["venue-nash"]),
    )
    return reply.balance


async def test_sales_are_pending_during_the_hold(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> None:
    app = await start_payment(funds_hold_s=3600)
    await add_venue(app, "venue-nash")
    async with channel_for(app) as channel:
        client = PaymentClient(
            app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
        )
        payment = await client.create(currency="EUR", price=20_000, quantity=1)
        b = await balance(client)
        assert b.pending.amount_minor == payment.fees.subtotal.amount_minor == 20_000
        assert (b.available.amount_minor, b.payable.amount_minor) == (0, 0)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.RequestPayout(payout_request(10_000), metadata=client.admin())
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_payouts(start_payment: Start, tokens: TestTokens, localstripe: str) -> None:
    app = await start_payment(
        funds_hold_s=0, chargeback_reserve_bps=500, payout_daily_limit_minor=100_000
    )
    await add_venue(app, "venue-nash")
    async with channel_for(app) as channel:
        client = PaymentClient(
            app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
        )
        for _ in range(4):
            await client.create(currency="EUR", price=10_000, quantity=4)
        b = await balance(client)
        assert b.available.amount_minor == 160_000
        assert b.reserved.amount_minor == 8_000  # 5 % chargeback reserve
        assert b.payable.amount_minor == 152_000
        assert b.payout_remaining_today.amount_minor == 100_000
        va = client.venue_admin(["venue-nash"])

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.RequestPayout(payout_request(9_999), metadata=va)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # under the $100 minimum
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.RequestPayout(
                payout_request(10_000), metadata=client.venue_admin(["x"])
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED

        reply = await client.stub.RequestPayout(payout_request(60_000, instant=True), metadata=va)
        payout = reply.payout
        assert payout.status == P.PAYOUT_STATUS_PENDING
        assert payout.provider_payout_id.startswith("po_")
        assert (
            payout.amount.amount_minor,
            payout.fee.amount_minor,
            payout.net_amount.amount_minor,
        ) == (
            60_000,
            600,
            59_400,
        )
        assert reply.balance.available.amount_minor == 100_000
        assert reply.balance.payout_remaining_today.amount_minor == 40_000
        assert [
            r["topic"]
            for r in await client.fetch("SELECT topic FROM outbox WHERE topic LIKE '%Payout%'")
        ] == [PAYOUT_CREATED]

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.RequestPayout(payout_request(50_000), metadata=va)
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "DAILY_PAYOUT_LIMIT" in str(info.value.trailing_metadata())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.RequestPayout(payout_request(200_000), metadata=client.admin())
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_payout_refused_by_stripe_is_reversed(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> None:
    app = await start_payment(funds_hold_s=0, chargeback_reserve_bps=0)
    await add_venue(app, "venue-nash")
    async with channel_for(app) as channel:
        client = PaymentClient(
            app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
        )
        await client.create(currency="USD", price=10_000, quantity=4)
        before = await balance(client, "USD")
        # localstripe refuses USD payouts (a 400 from "Stripe"): the payout fails, money back.
        reply = await client.stub.RequestPayout(
            payout_request(20_000, "USD"), metadata=client.admin()
        )
        assert reply.payout.status == P.PAYOUT_STATUS_FAILED
        assert reply.payout.failure_code
        assert reply.balance.payable.amount_minor == before.payable.amount_minor == 40_000
        kinds = [
            r["kind"]
            for r in await client.fetch(
                "SELECT kind FROM journal_transactions WHERE kind LIKE 'payout%' "
                "ORDER BY created_at"
            )
        ]
        assert kinds == ["payout", "payout_reversal"]
