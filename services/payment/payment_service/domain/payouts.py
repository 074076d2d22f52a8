"""Rules for a payout: the minimum, the venue's payable balance, the daily limit, the fee."""

from __future__ import annotations

import uuid

from payment_service.domain.errors import (
    DailyPayoutLimit,
    InsufficientPayable,
    InvalidInput,
    Violation,
)
from payment_service.domain.money import apply_bps


def check_amount(amount: int, minimum: int) -> None:
    if amount < minimum:
        raise InvalidInput([Violation("amount.amount_minor", f"at least {minimum}")])


def fee(amount: int, instant: bool, instant_fee_bps: int) -> int:
    """Instant payouts pay a fee (platform revenue); standard payouts are free."""
    return apply_bps(amount, instant_fee_bps) if instant else 0


def check_limits(amount: int, *, payable: int, paid_today: int, daily_limit: int) -> None:
    """A payout takes at most the payable balance and stays within the daily limit."""
    if amount > payable:
        raise InsufficientPayable(
            f"payout of {amount} exceeds the payable {payable}", {"payable": str(payable)}
        )
    if paid_today + amount > daily_limit:
        raise DailyPayoutLimit(
            "the daily payout limit would be exceeded",
            {"remaining": str(max(0, daily_limit - paid_today))},
        )


def remaining_today(paid_today: int, daily_limit: int) -> int:
    return max(0, daily_limit - paid_today)


def object_id(payout_id: uuid.UUID) -> str:
    """The ledger object of a payout's postings."""
    return f"payout:{payout_id}"
