"""RecordTransaction (what payment's relay calls for PaymentSucceeded / PaymentRefunded) through
the real service and sync engine, to the QuickBooks and Mailchimp stand-ins over HTTP: a sale
becomes one SalesReceipt and its consenting buyer a QuickBooks customer and a Mailchimp member;
the same event again (the relay's key) records nothing twice; a refund becomes one
RefundReceipt; a buyer without consent is no customer anywhere; only payment may call it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from meshdev.standins.mailchimp import MailchimpServer
from meshdev.standins.quickbooks import QuickBooksServer
from tests.integration.integration.support import VENUE, Client, key
from tests.integration.integration.test_sync import FINAL, finished
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _usd(minor: int) -> common_pb2.Money:
    return common_pb2.Money(currency="USD", amount_minor=minor)


def sale(
    payment_id: str, *, consent: bool, email: str = "ada@example.com"
) -> pb.RecordTransactionRequest:
    request = pb.RecordTransactionRequest(
        idempotency_key=key(),
        kind=pb.TRANSACTION_KIND_SALE,
        payment_id=payment_id,
        venue_id=VENUE,
        event_id="ev-1",
        order_id="ord-1",
        buyer_id=f"user-{email}",
        buyer_contact=common_pb2.ContactInfo(name="Ada Lovelace", email=email),
        marketing_consent=consent,
        lines=[
            pb.TransactionLine(
                ticket_type_id="tt-ga",
                description="General Admission",
                unit_price=_usd(2125),
                quantity=2,
            )
        ],
        amount=_usd(4250),
        provider_reference="pi_123",
    )
    request.occurred_at.FromDatetime(datetime(2026, 5, 1, 18, 0, tzinfo=UTC))
    return request


def refund_of(payment_id: str, refund_id: str) -> pb.RecordTransactionRequest:
    request = pb.RecordTransactionRequest(
        idempotency_key=key(),
        kind=pb.TRANSACTION_KIND_REFUND,
        payment_id=payment_id,
        refund_id=refund_id,
        venue_id=VENUE,
        buyer_contact=common_pb2.ContactInfo(name="Ada Lovelace", email="ada@example.com"),
        amount=_usd(2125),
    )
    request.occurred_at.FromDatetime(datetime(2026, 5, 2, 9, 0, tzinfo=UTC))
    return request


def payment_md(client: Client) -> tuple[tuple[str, str], ...]:
    token = client.tokens.service("payment", aud=client.app.settings.audience)
    return client.tokens.metadata(token)


async def settled(client: Client, answer: pb.RecordTransactionResponse) -> None:
    for job_id in answer.sync_job_ids:
        messages = await finished(client, job_id)
        assert messages[-1].job.status in FINAL
        assert messages[-1].job.status == pb.SYNC_JOB_STATUS_SUCCEEDED, messages[-1].job


async def test_sales_and_refunds_reach_quickbooks_once_and_consenting_buyers_mailchimp(
    client: Client, quickbooks: QuickBooksServer, mailchimp: MailchimpServer
) -> None:
    await client.dance(pb.PROVIDER_QUICKBOOKS)
    await client.dance(pb.PROVIDER_MAILCHIMP)
    md = payment_md(client)
    payment_id = str(uuid.uuid4())

    request = sale(payment_id, consent=True)
    answer = await client.stub.RecordTransaction(request, metadata=md)
    assert answer.transaction_id == payment_id
    assert len(answer.sync_job_ids) == 3  # QuickBooks receipts + customers, Mailchimp members
    await settled(client, answer)
    [receipt] = quickbooks.records("SalesReceipt")
    assert receipt["PrivateNote"] == payment_id and receipt["TotalAmt"] == Decimal("42.50")
    assert [c["DisplayName"] for c in quickbooks.records("Customer")] == ["ada@example.com"]
    [member] = mailchimp.members()
    assert (member["email_address"], member["status"]) == ("ada@example.com", "subscribed")

    # The relay delivers the same event again (same key), then a lost answer resent with a new
    # key: recorded once, nothing written twice.
    assert await client.stub.RecordTransaction(request, metadata=md) == answer
    resent = pb.RecordTransactionRequest()
    resent.CopyFrom(request)
    resent.idempotency_key = key()
    await settled(client, await client.stub.RecordTransaction(resent, metadata=md))
    assert quickbooks.receipt_refs("SalesReceipt")[payment_id] == 1

    refund_id = str(uuid.uuid4())
    refunded = await client.stub.RecordTransaction(refund_of(payment_id, refund_id), metadata=md)
    assert refunded.transaction_id == refund_id
    await settled(client, refunded)
    [back] = quickbooks.records("RefundReceipt")
    assert back["PrivateNote"] == refund_id and back["TotalAmt"] == Decimal("21.25")
    assert quickbooks.duplicates() == {"SalesReceipt": {}, "RefundReceipt": {}}


async def test_a_buyer_without_consent_is_no_customer_anywhere(
    client: Client, quickbooks: QuickBooksServer, mailchimp: MailchimpServer
) -> None:
    await client.dance(pb.PROVIDER_QUICKBOOKS)
    await client.dance(pb.PROVIDER_MAILCHIMP)
    answer = await client.stub.RecordTransaction(
        sale(str(uuid.uuid4()), consent=False, email="bob@example.com"), metadata=payment_md(client)
    )
    assert len(answer.sync_job_ids) == 1  # the receipt only
    await settled(client, answer)
    assert len(quickbooks.records("SalesReceipt")) == 1
    assert quickbooks.records("Customer") == [] and mailchimp.members() == []


async def test_only_payment_records_transactions(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.RecordTransaction(
            sale(str(uuid.uuid4()), consent=True), metadata=client.md()
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
