"""CreatePayment / GetPayment / ListPayments / CancelPayment against localstripe over gRPC."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from meshkit.events import unpack_event
from tests.payment.integration.support import (
    DECLINE_AT_CHARGE,
    FAILED,
    SUCCEEDED,
    THREE_D_SECURE,
    VISA,
    PaymentClient,
    add_venue,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2
from tickettoken.payment.v1.events_pb2 import PaymentSucceeded

P = payment_pb2


async def test_success_posts_ledger_and_outbox(client: PaymentClient, venue: str) -> None:
    pm = await client.payment_method(VISA)
    payment = await client.create(pm=pm, price=5_000, quantity=2)
    assert payment.status == P.PAYMENT_STATUS_SUCCEEDED
    assert payment.provider_payment_id.startswith("pi_")
    assert payment.total.amount_minor == 10_000 + 820 + 100 + 700 + 225
    assert payment.refundable.amount_minor == payment.total.amount_minor
    assert len(payment.line_items[0].ticket_ids) == 2
    assert payment.succeeded_at.seconds > 0
    intent = await client.intent(payment.provider_payment_id)
    assert intent["status"] == "succeeded"
    assert intent["amount"] == payment.total.amount_minor
    assert intent["metadata"]["payment_id"] == payment.id
    # One charge posting, one outbox event with the tickets to mint and the buyer's contact.
    postings = await client.fetch("SELECT kind, object_id FROM journal_transactions")
    assert [(r["kind"], r["object_id"]) for r in postings] == [
        ("charge", payment.provider_payment_id)
    ]
    [envelope] = await client.events()
    assert envelope.event_type == SUCCEEDED
    announced = unpack_event(envelope, PaymentSucceeded)
    assert [t.ticket_id for t in announced.tickets] == list(payment.line_items[0].ticket_ids)
    assert announced.buyer_contact.email == "ada@example.com"
    transitions = await client.fetch(
        "SELECT from_status, to_status, cause_kind, cause_ref FROM payment_transitions ORDER BY id"
    )
    assert [tuple(r) for r in transitions] == [
        (None, "PENDING", "rpc", "CreatePayment"),
        ("PENDING", "SUCCEEDED", "rpc", "CreatePayment"),
    ]


async def test_decline_is_a_failed_payment_and_replays(client: PaymentClient, venue: str) -> None:
    pm = await client.payment_method(DECLINE_AT_CHARGE)
    request = client.create_request(pm=pm)
    md = client.buyer()
    first = (await client.stub.CreatePayment(request, metadata=md, timeout=20)).payment
    assert first.status == P.PAYMENT_STATUS_FAILED
    assert first.failure_code == "card_declined"
    assert first.failure_message
    assert first.provider_payment_id.startswith("pi_")  # the declined intent, found via its charge
    again = (await client.stub.CreatePayment(request, metadata=md, timeout=20)).payment
    assert again == first  # replayed, byte for byte
    assert len(await client.intents_for(order_id=request.order_id)) == 1
    assert [e.event_type for e in await client.events()] == [FAILED]
    assert await client.fetchval("SELECT count(*) FROM journal_transactions") == 0
    # A failed payment does not block a new attempt for the same order.
    retry = await client.create(order=request.order_id, pm="pm_card_visa")
    assert retry.status == P.PAYMENT_STATUS_SUCCEEDED


async def test_three_d_secure_requires_action(client: PaymentClient, venue: str) -> None:
    pm = await client.payment_method(THREE_D_SECURE)
    payment = await client.create(pm=pm)
    assert payment.status == P.PAYMENT_STATUS_REQUIRES_ACTION
    assert payment.client_secret.startswith(payment.provider_payment_id)
    assert await client.fetchval("SELECT count(*) FROM journal_transactions") == 0
    # The buyer finishes 3-D Secure; Stripe's signed webhook (delivered by localstripe to our
    # HTTP endpoint) completes the payment.
    await client.authenticate(payment.provider_payment_id, payment.client_secret)
    for _ in range(100):
        current = await client.get(payment.id)
        if current.status == P.PAYMENT_STATUS_SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert current.status == P.PAYMENT_STATUS_SUCCEEDED
    assert current.client_secret == ""
    inbox = await client.fetch(
        "SELECT event_type, outcome FROM webhook_inbox WHERE payment_id = $1", uuid.UUID(payment.id)
    )
    assert ("payment_intent.succeeded", "WEBHOOK_STATUS_PROCESSED") in [tuple(r) for r in inbox]
    assert await client.fetchval("SELECT count(*) FROM journal_transactions") == 1


async def test_cancel_requires_action_payment(client: PaymentClient, venue: str) -> None:
    pm = await client.payment_method(THREE_D_SECURE)
    payment = await client.create(pm=pm)
    md = client.buyer()
    request = P.CancelPaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        payment_id=payment.id,
        reason=P.CANCELLATION_REASON_ABANDONED,
    )
    cancelled = (await client.stub.CancelPayment(request, metadata=md, timeout=20)).payment
    assert cancelled.status == P.PAYMENT_STATUS_CANCELLED
    assert (await client.intent(payment.provider_payment_id))["status"] == "canceled"
    # Cancelling a captured payment is an invalid transition: FAILED_PRECONDITION, no change.
    paid = await client.create()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CancelPayment(
            P.CancelPaymentRequest(idempotency_key=str(uuid.uuid4()), payment_id=paid.id),
            metadata=md,
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (await client.get(paid.id)).status == P.PAYMENT_STATUS_SUCCEEDED


async def test_hundred_concurrent_identical_creates_make_one_intent(
    client: PaymentClient, venue: str
) -> None:
    request = client.create_request()
    md = client.buyer()

    async def send() -> tuple[str, P.Payment | None]:
        for _ in range(200):
            try:
                reply = await client.stub.CreatePayment(request, metadata=md, timeout=30)
                return "ok", reply.payment
            except grpc.aio.AioRpcError as err:
                if err.code() is not grpc.StatusCode.ABORTED:
                    return err.code().name, None
                await asyncio.sleep(0.05)  # in progress: the client retries as RetryInfo says
        return "gave up", None

    results = await asyncio.gather(*(send() for _ in range(100)))
    assert {code for code, _ in results} == {"ok"}
    payments = {p.SerializeToString(deterministic=True) for _, p in results if p is not None}
    assert len(payments) == 1  # every caller got the same payment
    intents = await client.intents_for(order_id=request.order_id)
    assert len(intents) == 1
    assert await client.fetchval("SELECT count(*) FROM payments") == 1
    assert await client.fetchval("SELECT count(*) FROM journal_transactions") == 1


async def test_second_payment_for_a_live_order_is_refused(
    client: PaymentClient, venue: str
) -> None:
    first = await client.create()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create(order=first.order_id)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_validation(client: PaymentClient, venue: str) -> None:
    md = client.buyer()
    cases = {
        "line_items": client.create_request(quantity=5),  # over the 4-ticket limit
        "currency": client.create_request(currency="JPY"),
        "order_id": client.create_request(order=""),
        "payment_method_id": client.create_request(pm=""),
    }
    cases["order_id"].order_id = ""
    for field, request in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.CreatePayment(request, metadata=md)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (info.value.details() or ""), (field, info.value.details())
    huge = client.create_request(price=2**62, quantity=4)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CreatePayment(huge, metadata=md)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    over_max = client.create_request(price=400_000, quantity=4)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CreatePayment(over_max, metadata=md)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    shown = client.create_request(
        expected_total=common_pb2.Money(currency="USD", amount_minor=10_000)
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CreatePayment(shown, metadata=md)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert await client.fetchval("SELECT count(*) FROM payments") == 0


async def test_buyer_pays_only_for_themselves(client: PaymentClient, venue: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.create(buyer="buyer-2", md=client.buyer("buyer-1"))
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_visibility_rules(client: PaymentClient, venue: str) -> None:

    await add_venue(client.app, "venue-other")
    mine = await client.create(buyer="buyer-1")
    theirs = await client.create(buyer="buyer-2", venue="venue-other")
    # Buyers see their own payments only.
    assert (await client.get(mine.id, client.buyer("buyer-1"))).id == mine.id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.get(theirs.id, client.buyer("buyer-1"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    # A venue admin sees their venue's payments only.
    va = client.venue_admin([venue])
    assert (await client.get(mine.id, va)).id == mine.id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.get(theirs.id, va)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    listed = await client.stub.ListPayments(P.ListPaymentsRequest(), metadata=va)
    assert [p.id for p in listed.payments] == [mine.id]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.ListPayments(P.ListPaymentsRequest(venue_id="venue-other"), metadata=va)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    listed = await client.stub.ListPayments(P.ListPaymentsRequest(), metadata=client.buyer())
    assert [p.id for p in listed.payments] == [mine.id]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.ListPayments(
            P.ListPaymentsRequest(buyer_id="buyer-2"), metadata=client.buyer()
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Admins see everything; services allowed by the policy can read.
    listed = await client.stub.ListPayments(P.ListPaymentsRequest(), metadata=client.admin())
    assert {p.id for p in listed.payments} == {mine.id, theirs.id}
    assert (await client.get(theirs.id, client.service("nft"))).id == theirs.id


async def test_list_filters_and_pages(client: PaymentClient, venue: str) -> None:
    created = [await client.create() for _ in range(5)]
    declined = await client.create(pm="pm_card_chargeCustomerFail")
    md = client.admin()
    seen: list[str] = []
    token = ""
    while True:
        page = await client.stub.ListPayments(
            P.ListPaymentsRequest(page_size=2, page_token=token), metadata=md
        )
        seen += [p.id for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert seen == [p.id for p in reversed([*created, declined])]  # newest first, no repeats
    failed = await client.stub.ListPayments(
        P.ListPaymentsRequest(statuses=[P.PAYMENT_STATUS_FAILED]), metadata=md
    )
    assert [p.id for p in failed.payments] == [declined.id]
    by_order = await client.stub.ListPayments(
        P.ListPaymentsRequest(order_id=created[2].order_id), metadata=md
    )
    assert [p.id for p in by_order.payments] == [created[2].id]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.ListPayments(P.ListPaymentsRequest(page_token="garbage!"), metadata=md)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
