"""CalculateFees over gRPC: the seeds' worked examples exactly, tiers from the ledger, overrides."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from meshdev.testing.servers import TestTokens, channel_for
from tests.payment.integration.support import PaymentClient, add_venue
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc


def fees_request(
    venue: str, subtotal: int = 10_000, quantity: int = 1, **extra: object
) -> payment_pb2.CalculateFeesRequest:
    return payment_pb2.CalculateFeesRequest(
        venue_id=venue,
        currency="USD",
        line_items=[PaymentClient.line(subtotal // quantity, quantity)],
        **extra,  # type: ignore[arg-type]
    )


def amounts(fees: payment_pb2.FeeBreakdown) -> tuple[int, ...]:
    return (
        fees.platform_fee.amount_minor,
        fees.gas_fee.amount_minor,
        fees.tax.state_tax.amount_minor,
        fees.tax.local_tax.amount_minor,
        fees.total.amount_minor,
    )


async def test_worked_example_two_tickets_starter_venue(client: PaymentClient, venue: str) -> None:
    reply = await client.stub.CalculateFees(fees_request(venue, 10_000, 2), metadata=client.buyer())
    fees = reply.fees
    assert fees.venue_tier == payment_pb2.VENUE_TIER_STARTER
    assert fees.platform_fee_bps == 820
    assert amounts(fees) == (820, 100, 700, 225, 11_845)
    assert fees.subtotal.amount_minor == 10_000 and fees.ticket_count == 2
    assert fees.venue_payout.amount_minor == 10_000
    parts = (
        fees.subtotal.amount_minor
        + fees.platform_fee.amount_minor
        + fees.gas_fee.amount_minor
        + fees.tax.total_tax.amount_minor
    )
    assert parts == fees.total.amount_minor


async def test_worked_example_one_ticket_pro_venue(client: PaymentClient, venue: str) -> None:
    # Pro by volume: $10,000 of sales in the trailing 30 days of the venue's ledger.
    await client.create(price=10_000, quantity=1, md=client.admin())  # a $100 sale first
    await client.fetch(
        "INSERT INTO journal_transactions (id, kind, object_id, currency, venue_id, cause) "
        "VALUES ('00000000-0000-0000-0000-0000000000aa', 'charge', 'seed-volume', 'USD', $1, "
        "'test') ",
        venue,
    )
    await client.fetch(
        "INSERT INTO ledger_entries (txn_id, account, venue_id, currency, amount, available_at) "
        "VALUES ('00000000-0000-0000-0000-0000000000aa', 'venue_payable', $1, 'USD', -990000, "
        "now()), ('00000000-0000-0000-0000-0000000000aa', 'stripe_clearing', NULL, 'USD', "
        "990000, NULL)",
        venue,
    )
    reply = await client.stub.CalculateFees(fees_request(venue), metadata=client.buyer())
    assert reply.fees.venue_tier == payment_pb2.VENUE_TIER_PRO
    assert reply.fees.platform_fee_bps == 790
    assert amounts(reply.fees) == (790, 50, 700, 225, 11_765)


async def test_worked_example_nashville_entertainment_tax(client: PaymentClient) -> None:
    await add_venue(client.app, "venue-ryman", entertainment_tax=True)
    reply = await client.stub.CalculateFees(fees_request("venue-ryman"), metadata=client.buyer())
    tax = reply.fees.tax
    assert (tax.state_tax_bps, tax.local_tax_bps, tax.special_tax_bps) == (700, 225, 100)
    assert (
        tax.state_tax.amount_minor,
        tax.local_tax.amount_minor,
        tax.special_tax.amount_minor,
        tax.total_tax.amount_minor,
    ) == (700, 225, 100, 1025)
    assert tax.jurisdiction.region_code == "TN" and tax.jurisdiction.entertainment_tax_applies


async def test_overrides_for_admins_and_services_only(client: PaymentClient, venue: str) -> None:
    request = fees_request(
        venue,
        jurisdiction_override=payment_pb2.TaxJurisdiction(country_code="US", region_code="CA"),
        venue_tier_override=payment_pb2.VENUE_TIER_ENTERPRISE,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CalculateFees(request, metadata=client.buyer())
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    for md in (client.admin(), client.service("payment")):
        reply = await client.stub.CalculateFees(request, metadata=md)
        assert reply.fees.platform_fee_bps == 750
        assert reply.fees.tax.state_tax_bps == 725 and reply.fees.tax.local_tax_bps == 0
        assert reply.fees.tax.state_tax.amount_minor == 725


async def test_bad_input_is_invalid_argument_with_fields(client: PaymentClient, venue: str) -> None:
    def request(currency: str, quantity: int) -> payment_pb2.CalculateFeesRequest:
        return payment_pb2.CalculateFeesRequest(
            venue_id=venue,
            currency=currency,
            line_items=[
                payment_pb2.LineItem(
                    ticket_type_id="ga",
                    unit_price=common_pb2.Money(currency=currency, amount_minor=100),
                    quantity=quantity,
                )
            ],
        )

    # The contract's rule (quantity > 0) answers before the handler runs.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CalculateFees(request("USD", 0), metadata=client.buyer())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "line_items[0].quantity" in (info.value.details() or "")
    # A well-formed currency this deployment does not sell in: the service's own check.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CalculateFees(request("XYZ", 1), metadata=client.buyer())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "currency" in (info.value.details() or "")


async def test_unknown_venue_is_failed_precondition(client: PaymentClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CalculateFees(fees_request("nowhere"), metadata=client.buyer())
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_venues_tier_is_reused_for_the_cache_period(
    start_payment: Any, tokens: TestTokens, localstripe: str
) -> None:
    """The 30-day sum is not run for every quote: a process reuses a venue's tier for
    VENUE_TIER_CACHE_S, then sees the new volume."""
    app = await start_payment(venue_tier_cache_s=0.5)
    await add_venue(app, "venue-cached")
    async with channel_for(app) as channel:
        client = PaymentClient(
            app=app,
            stub=payment_pb2_grpc.PaymentServiceStub(channel),
            tokens=tokens,
            localstripe=localstripe,
        )
        first = await client.stub.CalculateFees(
            fees_request("venue-cached"), metadata=client.buyer()
        )
        assert first.fees.venue_tier == payment_pb2.VENUE_TIER_STARTER
        await client.fetch(
            "INSERT INTO journal_transactions (id, kind, object_id, currency, venue_id, cause) "
            "VALUES ('00000000-0000-0000-0000-0000000000bb', 'charge', 'seed-cached', 'USD', "
            "'venue-cached', 'test')"
        )
        await client.fetch(
            "INSERT INTO ledger_entries (txn_id, account, venue_id, currency, amount, "
            "available_at) VALUES ('00000000-0000-0000-0000-0000000000bb', 'venue_payable', "
            "'venue-cached', 'USD', -2000000, now()), ('00000000-0000-0000-0000-0000000000bb', "
            "'stripe_clearing', NULL, 'USD', 2000000, NULL)"
        )
        cached = await client.stub.CalculateFees(
            fees_request("venue-cached"), metadata=client.buyer()
        )
        assert cached.fees.venue_tier == payment_pb2.VENUE_TIER_STARTER
        await asyncio.sleep(0.6)
        fresh = await client.stub.CalculateFees(
            fees_request("venue-cached"), metadata=client.buyer()
        )
        assert fresh.fees.venue_tier == payment_pb2.VENUE_TIER_PRO
