"""Pure domain rules: the rounding rule, fee quotes, the state machine, ledger postings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payment_service.domain import ledger
from payment_service.domain.balances import venue_balance
from payment_service.domain.fees import (
    Jurisdiction,
    VenueTier,
    quote,
    quote_taxes,
    tax_rates,
    tier_for_volume,
)
from payment_service.domain.money import allocate, apply_bps, ratio
from payment_service.domain.states import (
    TRANSITIONS,
    PaymentStatus,
    allowed_from,
    can_transition,
    status_after_refunds,
)

NASHVILLE = Jurisdiction("US", "TN", "Nashville")
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_rounding_rule_is_half_up_on_integers() -> None:
    assert apply_bps(10_000, 820) == 820
    assert apply_bps(1, 5_000) == 1  # 0.5 → 1
    assert apply_bps(3, 5_000) == 2  # 1.5 → 2
    assert apply_bps(1, 4_999) == 0  # 0.4999 → 0
    assert ratio(7, 1, 2) == 4
    assert apply_bps(2**62, 10_000) == 2**62  # no float anywhere


@pytest.mark.parametrize(
    ("amount", "weights"),
    [(11_845, [10_000, 820, 100, 925]), (1, [1, 1, 1]), (10, [3, 3, 3]), (0, [5, 0])],
)
def test_allocate_sums_exactly(amount: int, weights: list[int]) -> None:
    parts = allocate(amount, weights)
    assert sum(parts) == amount
    assert all(p >= 0 for p in parts)


def test_allocating_a_total_by_its_parts_returns_the_parts() -> None:
    assert allocate(11_845, [10_000, 820, 100, 925]) == [10_000, 820, 100, 925]


def test_worked_example_starter_two_tickets() -> None:
    q = quote(
        currency="USD",
        subtotal=10_000,
        ticket_count=2,
        tier=VenueTier.STARTER,
        jurisdiction=NASHVILLE,
        gas_fee_per_ticket=50,
    )
    assert (q.platform_fee, q.gas_fee, q.tax.state_tax, q.tax.local_tax) == (820, 100, 700, 225)
    assert q.total == 11_845
    assert sum(q.parts().values()) == q.total


def test_worked_example_pro_one_ticket() -> None:
    q = quote(
        currency="USD",
        subtotal=10_000,
        ticket_count=1,
        tier=VenueTier.PRO,
        jurisdiction=NASHVILLE,
        gas_fee_per_ticket=50,
    )
    assert (q.platform_fee, q.gas_fee, q.tax.state_tax, q.tax.local_tax) == (790, 50, 700, 225)
    assert q.total == 11_765


def test_worked_example_nashville_entertainment_tax() -> None:
    j = Jurisdiction("US", "TN", "Nashville", entertainment_tax_applies=True)
    tax = quote_taxes(10_000, j, tax_rates(j))
    assert (tax.state_tax, tax.local_tax, tax.special_tax, tax.total_tax) == (700, 225, 100, 1025)


def test_other_states_and_countries() -> None:
    assert tax_rates(Jurisdiction("US", "CA", "Los Angeles")).state_bps == 725
    assert tax_rates(Jurisdiction("US", "OR")).state_bps == 0
    assert tax_rates(Jurisdiction("DE", "BE", "Berlin", entertainment_tax_applies=True)) == (
        tax_rates(Jurisdiction("DE", ""))
    )


def test_tiers_by_trailing_volume() -> None:
    assert tier_for_volume(0) is VenueTier.STARTER
    assert tier_for_volume(999_999) is VenueTier.STARTER
    assert tier_for_volume(1_000_000) is VenueTier.PRO
    assert tier_for_volume(10_000_000) is VenueTier.PRO
    assert tier_for_volume(10_000_001) is VenueTier.ENTERPRISE


def test_state_machine_never_leaves_terminal_states() -> None:
    for terminal in (PaymentStatus.FAILED, PaymentStatus.CANCELLED):
        assert TRANSITIONS[terminal] == frozenset()
    assert not can_transition(PaymentStatus.SUCCEEDED, PaymentStatus.REQUIRES_ACTION)
    assert not can_transition(PaymentStatus.SUCCEEDED, PaymentStatus.PENDING)
    assert can_transition(PaymentStatus.REQUIRES_ACTION, PaymentStatus.SUCCEEDED)
    assert PaymentStatus.SUCCEEDED not in allowed_from(PaymentStatus.PROCESSING)
    assert status_after_refunds(100, 0) is PaymentStatus.SUCCEEDED
    assert status_after_refunds(100, 40) is PaymentStatus.PARTIALLY_REFUNDED
    assert status_after_refunds(100, 100) is PaymentStatus.REFUNDED


def test_partial_refunds_take_back_every_part_exactly() -> None:
    split = ledger.Split(venue=10_000, platform=820, gas=100, tax=925)
    taken = [0, 0, 0, 0]
    before = 0
    for amount in (1, 333, 5_000, 11_845 - 5_334):
        share = ledger.refund_split(split, before, amount)
        assert share.total == amount
        taken = [t + s for t, s in zip(taken, share.weights(), strict=True)]
        before += amount
    assert taken == split.weights()


def test_postings_balance() -> None:
    split = ledger.Split(venue=10_000, platform=820, gas=100, tax=925)
    charge = ledger.charge_posting(
        object_id="pi_1", currency="USD", venue_id="v", split=split, available_at=NOW
    )
    assert sum(e.amount for e in charge.entries) == 0
    payout = ledger.payout_posting(
        object_id="po", currency="USD", venue_id="v", amount=10_000, fee=100, available_at=NOW
    )
    assert sum(e.amount for e in payout.entries) == 0
    with pytest.raises(ValueError, match="unbalanced"):
        ledger.Posting(
            ledger.EntryKind.CHARGE,
            "x",
            "USD",
            (
                ledger.Entry(ledger.Account.STRIPE_CLEARING, 1),
                ledger.Entry(ledger.Account.TAX_PAYABLE, -2),
            ),
        )


def test_venue_balance_derivation() -> None:
    b = venue_balance(pending=500, available=10_000, disputed=2_000, chargeback_reserve_bps=500)
    assert b.available == 12_000
    assert b.reserved == 2_000 + 500
    assert b.payable == 12_000 - 2_500
    empty = venue_balance(pending=0, available=-10, disputed=0, chargeback_reserve_bps=500)
    assert empty.payable == 0
