"""Rules for a new refund: what may be refunded, how much, and which tickets it cancels."""

from __future__ import annotations

from collections.abc import Sequence

from payment_service.domain.errors import (
    InvalidInput,
    NothingToRefund,
    PaymentNotRefundable,
    RefundExceedsRefundable,
    Violation,
)
from payment_service.domain.model import Payment
from payment_service.domain.states import CAPTURED_STATES


def check_request(payment: Payment, currency: str | None, ticket_ids: Sequence[str]) -> None:
    """A refund asks for the payment's currency and names only the payment's tickets."""
    if currency is not None and currency != payment.currency:
        raise InvalidInput(
            [Violation("amount.currency", f"must be the payment's {payment.currency}")]
        )
    own = set(payment.ticket_ids)
    unknown = [t for t in ticket_ids if t not in own]
    if unknown:
        raise InvalidInput([Violation("ticket_ids", f"not tickets of this payment: {unknown[:5]}")])


def plan(
    payment: Payment, amount: int | None, ticket_ids: Sequence[str]
) -> tuple[int, tuple[str, ...]]:
    """The amount (None: the whole refundable remainder) and the tickets a new refund of the
    (row-locked) payment takes; a full refund with no tickets named cancels every ticket."""
    if payment.status not in CAPTURED_STATES:
        raise PaymentNotRefundable(
            f"a {payment.status.name} payment cannot be refunded",
            {"status": payment.status.name},
        )
    amount = payment.refundable if amount is None else amount
    if amount <= 0:
        raise NothingToRefund("nothing is left to refund")
    if amount > payment.refundable:
        raise RefundExceedsRefundable(
            f"refund of {amount} exceeds the refundable {payment.refundable}",
            {"refundable": str(payment.refundable)},
        )
    tickets = tuple(ticket_ids)
    if not tickets and amount == payment.refundable and payment.refund_held == 0:
        tickets = tuple(payment.ticket_ids)
    return amount, tickets
