"""What a payment provider reports, in the provider's own vocabulary, as plain values.

The Stripe adapter returns these (from API answers and webhook objects alike); settlement turns
them into our state (`settlement`). Status strings are Stripe's (`succeeded`, `requires_action`,
...); `states` maps them onto ours.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IntentResult:
    """What we keep from a PaymentIntent (or from a decline that stopped its confirmation)."""

    intent_id: str
    status: str
    charge_id: str = ""
    client_secret: str = ""
    next_action_url: str = ""
    failure_code: str = ""
    decline_code: str = ""
    failure_message: str = ""
    declined: bool = False


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_id: str
    status: str
    failure_reason: str = ""


@dataclass(frozen=True, slots=True)
class PayoutResult:
    payout_id: str
    status: str
    arrival_date: int | None = None
    failure_code: str = ""
    failure_message: str = ""


def never_reached(intent_id: str, message: str) -> IntentResult:
    """The provider has no PaymentIntent for a payment (never created, or unknown to it): the
    payment fails with `provider_payment_missing`."""
    return IntentResult(
        intent_id=intent_id,
        status="requires_payment_method",
        failure_code="provider_payment_missing",
        failure_message=message,
        declined=True,
    )


def refused(code: str, message: str) -> IntentResult:
    """The provider refused the create as sent (never acceptable): a failed payment, recorded
    like a decline."""
    return IntentResult(
        intent_id="",
        status="requires_payment_method",
        failure_code=code,
        failure_message=message,
        declined=True,
    )
