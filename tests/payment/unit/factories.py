"""Domain objects for unit tests, with plausible defaults (override any field)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from payment_service.domain.fees import Jurisdiction, Pricing, VenueTier
from payment_service.domain.model import (
    Contact,
    EventDetails,
    LineItem,
    Payment,
    Payout,
    Refund,
    RefundReason,
)
from payment_service.domain.states import PaymentStatus, PayoutStatus, RefundStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
NASHVILLE = Jurisdiction("US", "TN", "Nashville")
PAYMENT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def payment(**changes: Any) -> Payment:
    quote = Pricing(gas_fee_per_ticket=50).quote("USD", 10_000, 2, VenueTier.STARTER, NASHVILLE)
    base = Payment(
        id=PAYMENT_ID,
        order_id="order-1",
        venue_id="venue-1",
        event_id="event-1",
        buyer_id="buyer-1",
        currency="USD",
        status=PaymentStatus.REQUIRES_ACTION,
        subtotal=quote.subtotal,
        platform_fee=quote.platform_fee,
        gas_fee=quote.gas_fee,
        tax_total=quote.tax.total_tax,
        total=quote.total,
        refund_held=0,
        refund_succeeded=0,
        provider="stripe",
        provider_payment_id="pi_1",
        provider_charge_id=None,
        payment_method_id="pm_card_visa",
        client_secret="pi_1_secret",
        next_action_url=None,
        failure_code=None,
        decline_code=None,
        failure_message=None,
        line_items=(LineItem("ga", 2, 5_000, "General Admission", "A", "3", "7", ("t-1", "t-2")),),
        fees=quote,
        buyer_contact=Contact(name="Ada", email="ada@example.com"),
        event=EventDetails(event_name="The Band", venue_name="Ryman", starts_at=NOW),
        metadata={"channel": "web"},
        created_by="buyer-1",
        created_at=NOW,
        updated_at=NOW,
        succeeded_at=None,
        late_capture_at=None,
    )
    return dataclasses.replace(base, **changes)


def refund(**changes: Any) -> Refund:
    base = Refund(
        id=uuid.UUID("00000000-0000-4000-8000-0000000000aa"),
        seq=1,
        payment_id=PAYMENT_ID,
        status=RefundStatus.PENDING,
        amount=1_000,
        currency="USD",
        reason=RefundReason.REQUESTED_BY_CUSTOMER,
        note="",
        ticket_ids=(),
        provider_refund_id=None,
        failure_reason=None,
        created_by="buyer-1",
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(base, **changes)


def payout(**changes: Any) -> Payout:
    base = Payout(
        id=uuid.UUID("00000000-0000-4000-8000-0000000000bb"),
        venue_id="venue-1",
        currency="EUR",
        status=PayoutStatus.PENDING,
        amount=60_000,
        fee=600,
        net_amount=59_400,
        instant=True,
        statement_descriptor="",
        provider_payout_id=None,
        failure_code=None,
        failure_message=None,
        expected_arrival_at=None,
        created_by="va-1",
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(base, **changes)
