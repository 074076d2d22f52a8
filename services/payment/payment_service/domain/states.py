"""The payment state machine: the one table of allowed transitions, and Stripe's states mapped
onto ours.

The database enforces the same table: every status change is a conditional UPDATE whose WHERE
clause admits only the `allowed_from(target)` states (see store.payments.transition), so two writers
racing (an RPC and a webhook, or two webhooks out of order) can never move a payment backwards.
"""

from __future__ import annotations

import enum


class PaymentStatus(enum.IntEnum):
    """Numbers match tickettoken.payment.v1.PaymentStatus; names are stored in the database."""

    PENDING = 1
    PROCESSING = 2
    REQUIRES_ACTION = 3
    SUCCEEDED = 4
    PARTIALLY_REFUNDED = 5
    REFUNDED = 6
    FAILED = 7
    CANCELLED = 8
    DISPUTED = 9


S = PaymentStatus

OPEN_STATES = frozenset({S.PENDING, S.PROCESSING, S.REQUIRES_ACTION})
CAPTURED_STATES = frozenset({S.SUCCEEDED, S.PARTIALLY_REFUNDED})
TERMINAL_STATES = frozenset({S.REFUNDED, S.FAILED, S.CANCELLED})

# from → allowed targets. Forward only, with two exceptions that are not "backwards" in time but
# a correction of money state: a refund the provider failed makes its amount refundable again
# (REFUNDED/PARTIALLY_REFUNDED → PARTIALLY_REFUNDED/SUCCEEDED), and only the refund-failure path
# asks for those targets.
TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.PENDING: frozenset({S.PROCESSING, S.REQUIRES_ACTION, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.REQUIRES_ACTION: frozenset({S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED, S.SUCCEEDED}),
    S.REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.SUCCEEDED}),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
    S.DISPUTED: frozenset(),
}


# Closed states Stripe can still capture money for ("late capture"): a create whose answer came
# after the payment was closed (e.g. reconciliation gave up on it), or a webhook announcing such
# a capture. Deliberately NOT in TRANSITIONS: no ordinary writer may revive a closed payment.
# Only the late-capture decision (settlement.decide_intent) moves these to SUCCEEDED, and the
# same transaction posts the charge and holds the whole amount for an automatic refund, so the
# payment ends REFUNDED and the money goes back to the buyer.
LATE_CAPTURE_FROM = frozenset({S.CANCELLED, S.FAILED})


def can_transition(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in TRANSITIONS[current]


def allowed_from(target: PaymentStatus) -> frozenset[PaymentStatus]:
    """Every state from which `target` may be entered (the conditional UPDATE's WHERE)."""
    return frozenset(src for src, targets in TRANSITIONS.items() if target in targets)


class CauseKind(enum.StrEnum):
    """What caused a transition (recorded with each one)."""

    RPC = "rpc"
    WEBHOOK = "webhook"
    RECONCILIATION = "reconciliation"


# Stripe PaymentIntent status → ours. `requires_payment_method` after a confirmation attempt
# means the attempt failed (a decline); before any attempt we never see it because we create
# and confirm in one call.
_STRIPE_INTENT: dict[str, PaymentStatus] = {
    "succeeded": S.SUCCEEDED,
    "processing": S.PROCESSING,
    "requires_action": S.REQUIRES_ACTION,
    "requires_confirmation": S.PENDING,
    "requires_capture": S.PROCESSING,
    "requires_payment_method": S.FAILED,
    "canceled": S.CANCELLED,
}


def from_stripe_intent(status: str) -> PaymentStatus | None:
    """Our status for a Stripe PaymentIntent status (None when it means nothing to us)."""
    return _STRIPE_INTENT.get(status)


# Webhook event type → the status it announces.
STRIPE_INTENT_EVENTS: dict[str, PaymentStatus] = {
    "payment_intent.succeeded": S.SUCCEEDED,
    "payment_intent.payment_failed": S.FAILED,
    "payment_intent.canceled": S.CANCELLED,
    "payment_intent.requires_action": S.REQUIRES_ACTION,
    "payment_intent.processing": S.PROCESSING,
}


class RefundStatus(enum.IntEnum):
    """Numbers match tickettoken.payment.v1.RefundStatus."""

    PENDING = 1
    REQUIRES_ACTION = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5


# Refund states that hold part of the payment (count against the refundable remainder).
REFUND_HOLDING = frozenset(
    {RefundStatus.PENDING, RefundStatus.REQUIRES_ACTION, RefundStatus.SUCCEEDED}
)

_STRIPE_REFUND: dict[str, RefundStatus] = {
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.REQUIRES_ACTION,
    "succeeded": RefundStatus.SUCCEEDED,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELLED,
}


def from_stripe_refund(status: str | None) -> RefundStatus:
    return _STRIPE_REFUND.get(status or "", RefundStatus.PENDING)


class PayoutStatus(enum.IntEnum):
    """Numbers match tickettoken.payment.v1.PayoutStatus."""

    PENDING = 1
    IN_TRANSIT = 2
    PAID = 3
    FAILED = 4
    CANCELLED = 5


_STRIPE_PAYOUT: dict[str, PayoutStatus] = {
    "pending": PayoutStatus.PENDING,
    "in_transit": PayoutStatus.IN_TRANSIT,
    "paid": PayoutStatus.PAID,
    "failed": PayoutStatus.FAILED,
    "canceled": PayoutStatus.CANCELLED,
}


def from_stripe_payout(status: str | None) -> PayoutStatus:
    return _STRIPE_PAYOUT.get(status or "", PayoutStatus.PENDING)


def status_after_refunds(total: int, refunded_succeeded: int) -> PaymentStatus:
    """The captured state implied by how much has been refunded."""
    if refunded_succeeded <= 0:
        return S.SUCCEEDED
    if refunded_succeeded >= total:
        return S.REFUNDED
    return S.PARTIALLY_REFUNDED
