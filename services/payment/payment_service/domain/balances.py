"""A venue's balances, derived from its ledger accounts (no stored balance to drift).

available = sales past the hold (net of refunds and payouts) + funds held for open disputes
reserved  = funds held for open disputes + the chargeback reserve (a share of the rest)
payable   = available - reserved, never negative
"""

from __future__ import annotations

from dataclasses import dataclass

from payment_service.domain.money import apply_bps


@dataclass(frozen=True, slots=True)
class VenueBalance:
    pending: int
    available: int
    reserved: int
    payable: int


def venue_balance(
    *, pending: int, available: int, disputed: int, chargeback_reserve_bps: int
) -> VenueBalance:
    """Balances from the ledger sums of `venue_payable` (split by availability) and
    `venue_reserved` (`disputed`)."""
    rolling_reserve = apply_bps(max(available, 0), chargeback_reserve_bps)
    total_available = available + disputed
    reserved = disputed + rolling_reserve
    return VenueBalance(
        pending=pending,
        available=total_available,
        reserved=reserved,
        payable=max(0, total_available - reserved),
    )
