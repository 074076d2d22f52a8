"""RefundPayment: full, partial, over-refund, concurrency, ownership and the rate limit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest

from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from tests.payment.integration.support import REFUNDED, SUCCEEDED, PaymentClient, add_venue
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

P = payment_pb2


async def stripe_refunds(client: PaymentClient, intent_id: str) -> list[dict[str, object]]:
    async with client._http() as http:
        response = await http.get("/v1/refunds", params={"payment_intent": intent_id, "limit": 100})
        response.raise_for_status()
        return list(response.json()["data"])


async def test_full_refund(client: PaymentClient, venue: str) -> None:
    payment = await client.create(quantity=2, price=5_000)
    reply = await client.refund(payment.id)
    assert reply.refund.status == P.REFUND_STATUS_SUCCEEDED
    assert reply.refund.amount.amount_minor == payment.total.amount_minor
    assert reply.refund.provider_refund_id.startswith("re_")
    assert sorted(reply.refund.ticket_ids) == sorted(payment.line_items[0].ticket_ids)
    assert reply.payment.status == P.PAYMENT_STATUS_REFUNDED
    assert reply.payment.refundable.amount_minor == 0
    refunds = await stripe_refunds(client, payment.provider_payment_id)
    assert [r["amount"] for r in refunds] == [payment.total.amount_minor]
    events = [e.event_type for e in await client.events()]
    assert events == [SUCCEEDED, REFUNDED]
    # Ledger: every part of the charge taken back exactly.
    balances = {
        (r["account"]): r["total"]
        for r in await client.fetch(
            "SELECT account, sum(amount) AS total FROM ledger_entries GROUP BY account"
        )
    }
    assert set(balances.values()) == {0}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.refund(payment.id, 1)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_partial_refunds_and_over_refund(client: PaymentClient, venue: str) -> None:
    payment = await client.create()
    total = payment.total.amount_minor
    first = await client.refund(payment.id, 3_000)
    assert first.payment.status == P.PAYMENT_STATUS_PARTIALLY_REFUNDED
    assert first.payment.refundable.amount_minor == total - 3_000
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.refund(payment.id, total)  # more than what is left
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "REFUND_EXCEEDS_REFUNDABLE" in str(info.value.trailing_metadata())
    rest = await client.refund(payment.id)  # unset amount = the whole remainder
    assert rest.refund.amount.amount_minor == total - 3_000
    assert rest.payment.status == P.PAYMENT_STATUS_REFUNDED
    assert [r.amount.amount_minor for r in rest.payment.refunds] == [3_000, total - 3_000]


async def test_refund_replays_by_key(client: PaymentClient, venue: str) -> None:
    payment = await client.create()
    key = str(uuid.uuid4())
    first = await client.refund(payment.id, 500, key=key)
    again = await client.refund(payment.id, 500, key=key)
    assert again == first
    assert len(await stripe_refunds(client, payment.provider_payment_id)) == 1


async def test_twenty_concurrent_partial_refunds_never_exceed(
    client: PaymentClient, venue: str
) -> None:
    payment = await client.create()
    total = payment.total.amount_minor  # 11 025
    amount = 1_000  # 20 x 1 000 = 20 000 > total: at most 11 fit

    async def one() -> str:
        try:
            reply = await client.refund(payment.id, amount)
            return P.RefundStatus.Name(reply.refund.status)
        except grpc.aio.AioRpcError as err:
            return err.code().name

    results = await asyncio.gather(*(one() for _ in range(20)))
    ok = results.count("REFUND_STATUS_SUCCEEDED")
    assert ok == total // amount
    assert results.count("FAILED_PRECONDITION") == 20 - ok
    current = await client.get(payment.id)
    assert current.refunded.amount_minor == ok * amount <= total
    at_stripe = await stripe_refunds(client, payment.provider_payment_id)
    assert sum(int(r["amount"]) for r in at_stripe) == ok * amount  # type: ignore[call-overload]
    assert (
        await client.fetchval("SELECT count(*) FROM journal_transactions WHERE kind = 'refund'")
        == ok
    )


async def test_refund_ownership(client: PaymentClient, venue: str) -> None:
    await add_venue(client.app, "venue-other")
    payment = await client.create(buyer="buyer-1")
    for md, code in (
        (client.buyer("buyer-2"), grpc.StatusCode.NOT_FOUND),
        (client.venue_admin(["venue-other"]), grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.refund(payment.id, 100, md=md)
        assert info.value.code() is code
    assert (await client.refund(payment.id, 100, md=client.buyer("buyer-1"))).refund.status == (
        P.REFUND_STATUS_SUCCEEDED
    )
    assert (await client.refund(payment.id, 100, md=client.venue_admin([venue]))).refund.status == (
        P.REFUND_STATUS_SUCCEEDED
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.refund(payment.id, 100, md=client.buyer("buyer-1"), currency="EUR")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_refunds_are_rate_limited_per_principal(
    start_payment: Callable[..., Awaitable[App]], tokens: TestTokens, localstripe: str
) -> None:
    app = await start_payment(refund_rate_limit_per_minute=5)
    await add_venue(app, "venue-nash")
    async with channel_for(app) as channel:
        client = PaymentClient(
            app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
        )
        buyer = f"buyer-{uuid.uuid4().hex[:6]}"
        payment = await client.create(buyer=buyer)
        md = client.buyer(buyer)
        for _ in range(5):
            await client.refund(payment.id, 100, md=md)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.refund(payment.id, 100, md=md)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # Another principal has its own budget.
        await client.refund(payment.id, 100, md=client.admin(f"admin-{uuid.uuid4().hex[:6]}"))
