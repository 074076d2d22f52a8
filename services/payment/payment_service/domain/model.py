"""The payment service's entities: payments with their cart, refunds and payouts.

Amounts are integer minor units in the entity's currency. Statuses are the state machine's
enums (`states`), never strings. A payment's cart (line items with their ticket ids), fee
breakdown, buyer contact, event details and caller metadata never change after creation.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from payment_service.domain.fees import FeeQuote
from payment_service.domain.ledger import Split
from payment_service.domain.states import (
    CAPTURED_STATES,
    PaymentStatus,
    PayoutStatus,
    RefundStatus,
)


@dataclass(frozen=True, slots=True)
class Contact:
    """Where to reach the buyer (mirrors the contract's ContactInfo)."""

    name: str = ""
    email: str = ""
    phone: str = ""
    wallet_address: str = ""
    locale: str = ""
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class EventDetails:
    """What the tickets are for, as the NFT and messages show it."""

    event_name: str = ""
    venue_name: str = ""
    starts_at: datetime | None = None
    image_url: str = ""


@dataclass(frozen=True, slots=True)
class LineItem:
    """A quantity of one ticket type at one price; `ticket_ids` has one id per ticket once the
    payment exists (given by the caller, or assigned by `ids.assign_ticket_ids`)."""

    ticket_type_id: str
    quantity: int
    unit_price: int
    description: str = ""
    section: str = ""
    row: str = ""
    seat: str = ""
    ticket_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket of a paid cart, with its line's type, seat and price."""

    ticket_id: str
    line: LineItem


class RefundReason(enum.IntEnum):
    """Numbers match tickettoken.payment.v1.RefundReason."""

    UNSPECIFIED = 0
    REQUESTED_BY_CUSTOMER = 1
    DUPLICATE = 2
    FRAUDULENT = 3
    EVENT_CANCELLED = 4
    EVENT_RESCHEDULED = 5
    OTHER = 6


@dataclass(frozen=True, slots=True)
class Payment:
    id: uuid.UUID
    order_id: str
    venue_id: str
    event_id: str
    buyer_id: str
    currency: str
    status: PaymentStatus
    subtotal: int
    platform_fee: int
    gas_fee: int
    tax_total: int
    total: int
    # Refunds that hold part of the payment (pending, requires action, succeeded).
    refund_held: int
    refund_succeeded: int
    provider: str
    provider_payment_id: str | None
    provider_charge_id: str | None
    payment_method_id: str
    client_secret: str | None
    next_action_url: str | None
    failure_code: str | None
    decline_code: str | None
    failure_message: str | None
    line_items: tuple[LineItem, ...]
    # The breakdown as charged; None only for rows written without one (never by CreatePayment).
    fees: FeeQuote | None
    buyer_contact: Contact
    event: EventDetails
    metadata: Mapping[str, str]
    created_by: str
    created_at: datetime
    updated_at: datetime
    succeeded_at: datetime | None
    # Set when Stripe captured money after the payment was closed here (see settlement).
    late_capture_at: datetime | None
    # The W3C trace context of the CreatePayment request ("" when none): its PaymentIntent
    # carries it, and settlement by a webhook continues it.
    traceparent: str = ""
    tracestate: str = ""
    # The buyer agreed to the venue's marketing (the venue's tools receive them only then).
    marketing_consent: bool = False

    @property
    def refundable(self) -> int:
        """What refunds may still take: the total less what refunds hold."""
        return self.total - self.refund_held

    @property
    def shown_refundable(self) -> int:
        """The refundable remainder as callers see it: zero unless captured."""
        return self.refundable if self.status in CAPTURED_STATES else 0

    @property
    def split(self) -> Split:
        """Where the payment's money goes, by ledger destination (sums to the total)."""
        return Split(
            venue=self.subtotal, platform=self.platform_fee, gas=self.gas_fee, tax=self.tax_total
        )

    @property
    def tickets(self) -> list[Ticket]:
        """Every ticket of the cart, in cart order."""
        return [Ticket(t, line) for line in self.line_items for t in line.ticket_ids]

    @property
    def ticket_ids(self) -> list[str]:
        return [t for line in self.line_items for t in line.ticket_ids]


@dataclass(frozen=True, slots=True)
class Refund:
    id: uuid.UUID
    seq: int
    payment_id: uuid.UUID
    status: RefundStatus
    amount: int
    currency: str
    reason: RefundReason
    note: str
    ticket_ids: tuple[str, ...]
    provider_refund_id: str | None
    failure_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Payout:
    id: uuid.UUID
    venue_id: str
    currency: str
    status: PayoutStatus
    amount: int
    fee: int
    net_amount: int
    instant: bool
    statement_descriptor: str
    provider_payout_id: str | None
    failure_code: str | None
    failure_message: str | None
    expected_arrival_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """Which payments a List asks for; empty fields match everything."""

    buyer_id: str = ""
    venue_ids: Sequence[str] = ()
    event_id: str = ""
    order_id: str = ""
    statuses: Sequence[PaymentStatus] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment about to be recorded (PENDING, with its quote and cart)."""

    id: uuid.UUID
    order_id: str
    venue_id: str
    event_id: str
    buyer_id: str
    currency: str
    quote: FeeQuote
    payment_method_id: str
    line_items: tuple[LineItem, ...]
    buyer_contact: Contact
    event: EventDetails
    created_by: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    status: PaymentStatus = PaymentStatus.PENDING
    provider_payment_id: str | None = None
    traceparent: str = ""
    tracestate: str = ""
    marketing_consent: bool = False


@dataclass(frozen=True, slots=True)
class NewPayout:
    """A payout about to be recorded (PENDING), its amount already taken from the balance."""

    id: uuid.UUID
    venue_id: str
    currency: str
    amount: int
    fee: int
    instant: bool
    statement_descriptor: str
    created_by: str

    @property
    def net_amount(self) -> int:
        return self.amount - self.fee
