"""Money arithmetic on integer minor units, with the service's one rounding rule.

THE rounding rule (used for every fee, tax, payout fee and refund split in this service):
`ratio(amount, numerator, denominator)` = amount * numerator / denominator rounded to the nearest
minor unit, halves rounded up, computed with integers only (no floats, no Decimal contexts).
Basis points are `ratio(amount, bps, 10_000)`. When one amount is split into parts, the parts are
differences of rounded cumulative sums (`allocate`), so they always add up to the amount exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

INT64_MAX = 2**63 - 1
BPS_DENOMINATOR = 10_000


def ratio(amount: int, numerator: int, denominator: int) -> int:
    """`amount * numerator / denominator`, rounded half up; all non-negative integers."""
    if amount < 0 or numerator < 0 or denominator <= 0:
        raise ValueError("ratio() takes non-negative amounts and a positive denominator")
    # floor(x + 1/2) with x = a*n/d, kept in integers: floor((2*a*n + d) / (2*d)).
    return (2 * amount * numerator + denominator) // (2 * denominator)


def apply_bps(amount: int, bps: int) -> int:
    """`amount` * `bps` / 10 000 under the rounding rule (820 bps of 10 000 → 820)."""
    return ratio(amount, bps, BPS_DENOMINATOR)


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split `amount` in proportion to `weights`; the parts sum to `amount` exactly.

    Each part is the difference of two consecutive rounded cumulative shares, so rounding never
    leaks a unit and splitting a total by its own parts returns those parts.
    """
    total = sum(weights)
    if amount < 0 or any(w < 0 for w in weights):
        raise ValueError("allocate() takes non-negative amounts and weights")
    if total == 0:
        if amount:
            raise ValueError("cannot allocate a non-zero amount over zero weights")
        return [0 for _ in weights]
    parts: list[int] = []
    cumulative_weight = 0
    previous = 0
    for weight in weights:
        cumulative_weight += weight
        current = ratio(amount, cumulative_weight, total)
        parts.append(current - previous)
        previous = current
    return parts


def within_int64(amount: int) -> bool:
    return 0 <= amount <= INT64_MAX
