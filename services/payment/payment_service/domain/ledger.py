"""Double-entry postings: which accounts each money movement touches, and by how much.

Sign convention: an entry's amount is positive for a debit and negative for a credit, so the
entries of every journal transaction sum to zero (checked here, and again by a deferred
constraint trigger in the database). Asset accounts (Stripe clearing) carry debit balances;
liability and revenue accounts (venue payable, tax payable, platform revenue, ...) carry credit
balances, reported as positive numbers by `liability_balance`.

Venue money lives in two accounts: `venue_payable` (each entry stamped with the moment it
becomes available, so "pending" and "available" are derived from time without a release job)
and `venue_reserved` (disputed funds). Refund and dispute entries on `venue_payable` carry the
sale's availability time, so they reduce the same bucket the sale fed. Refunds and payouts
credit Stripe clearing directly: Stripe debits our balance when it creates them, and a provider
failure posts an exact reversal.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from payment_service.domain.money import allocate


class Account(enum.StrEnum):
    STRIPE_CLEARING = "stripe_clearing"  # our balance at Stripe (asset)
    VENUE_PAYABLE = "venue_payable"  # owed to a venue: pending until available_at, then available
    VENUE_RESERVED = "venue_reserved"  # a venue's funds held for open disputes
    PLATFORM_REVENUE = "platform_revenue"  # platform fees and instant-payout fees
    TAX_PAYABLE = "tax_payable"  # sales, local and entertainment tax collected
    GAS_RESERVE = "gas_reserve"  # collected to pay for minting the ticket NFTs


class EntryKind(enum.StrEnum):
    """Journal transaction kinds; (provider object id, kind) is unique in the database."""

    CHARGE = "charge"
    REFUND = "refund"
    REFUND_REVERSAL = "refund_reversal"
    DISPUTE = "dispute"
    PAYOUT = "payout"
    PAYOUT_REVERSAL = "payout_reversal"


@dataclass(frozen=True, slots=True)
class Entry:
    account: Account
    amount: int  # + debit, - credit
    venue_id: str | None = None
    available_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Posting:
    """One journal transaction: balanced entries about one provider object."""

    kind: EntryKind
    object_id: str
    currency: str
    entries: tuple[Entry, ...]

    def __post_init__(self) -> None:
        if len(self.entries) < 2:
            raise ValueError("a posting needs at least two entries")
        if sum(e.amount for e in self.entries) != 0:
            raise ValueError(f"unbalanced posting {self.kind}:{self.object_id}")


def _entries(*entries: Entry) -> tuple[Entry, ...]:
    # Zero lines carry no information (a free gas fee, a tax-free state): leave them out.
    return tuple(e for e in entries if e.amount != 0)


@dataclass(frozen=True, slots=True)
class Split:
    """How one payment's money is divided (from its fee quote); sums to `total`."""

    venue: int
    platform: int
    gas: int
    tax: int

    @property
    def total(self) -> int:
        return self.venue + self.platform + self.gas + self.tax

    def weights(self) -> list[int]:
        return [self.venue, self.platform, self.gas, self.tax]


def charge_posting(
    *, object_id: str, currency: str, venue_id: str, split: Split, available_at: datetime
) -> Posting:
    """A captured payment: Stripe holds the total; it is owed to venue, platform, gas and tax."""
    return Posting(
        EntryKind.CHARGE,
        object_id,
        currency,
        _entries(
            Entry(Account.STRIPE_CLEARING, split.total),
            Entry(Account.VENUE_PAYABLE, -split.venue, venue_id, available_at),
            Entry(Account.PLATFORM_REVENUE, -split.platform),
            Entry(Account.GAS_RESERVE, -split.gas),
            Entry(Account.TAX_PAYABLE, -split.tax),
        ),
    )


def refund_split(split: Split, refunded_before: int, amount: int) -> Split:
    """The share of each part a refund of `amount` takes back, after `refunded_before`.

    Computed as allocate(before + amount) - allocate(before), so any sequence of partial refunds
    that adds up to the total takes back every part exactly.
    """
    if refunded_before < 0 or amount <= 0 or refunded_before + amount > split.total:
        raise ValueError("refund outside the payment's total")
    after = allocate(refunded_before + amount, split.weights())
    before = allocate(refunded_before, split.weights())
    venue, platform, gas, tax = (a - b for a, b in zip(after, before, strict=True))
    return Split(venue, platform, gas, tax)


def refund_posting(
    *,
    object_id: str,
    currency: str,
    venue_id: str,
    share: Split,
    available_at: datetime,
    reverse: bool = False,
) -> Posting:
    """A refund paid out of Stripe, taken back from each part in proportion (or its reversal
    when the provider failed it)."""
    sign = -1 if reverse else 1
    return Posting(
        EntryKind.REFUND_REVERSAL if reverse else EntryKind.REFUND,
        object_id,
        currency,
        _entries(
            Entry(Account.VENUE_PAYABLE, sign * share.venue, venue_id, available_at),
            Entry(Account.PLATFORM_REVENUE, sign * share.platform),
            Entry(Account.GAS_RESERVE, sign * share.gas),
            Entry(Account.TAX_PAYABLE, sign * share.tax),
            Entry(Account.STRIPE_CLEARING, -sign * share.total),
        ),
    )


def dispute_posting(
    *, object_id: str, currency: str, venue_id: str, amount: int, available_at: datetime
) -> Posting:
    """An opened dispute moves the disputed amount of the venue's money into reserve."""
    return Posting(
        EntryKind.DISPUTE,
        object_id,
        currency,
        (
            Entry(Account.VENUE_PAYABLE, amount, venue_id, available_at),
            Entry(Account.VENUE_RESERVED, -amount, venue_id),
        ),
    )


def payout_posting(
    *,
    object_id: str,
    currency: str,
    venue_id: str,
    amount: int,
    fee: int,
    available_at: datetime,
    reverse: bool = False,
) -> Posting:
    """A payout takes `amount` from the venue's payable; `fee` stays as platform revenue and the
    rest leaves Stripe for the bank (or, reversed, all of it comes back when the payout fails)."""
    sign = -1 if reverse else 1
    return Posting(
        EntryKind.PAYOUT_REVERSAL if reverse else EntryKind.PAYOUT,
        object_id,
        currency,
        _entries(
            Entry(Account.VENUE_PAYABLE, sign * amount, venue_id, available_at),
            Entry(Account.PLATFORM_REVENUE, -sign * fee),
            Entry(Account.STRIPE_CLEARING, -sign * (amount - fee)),
        ),
    )


def liability_balance(amounts: Sequence[int]) -> int:
    """A credit-balance account's balance as a positive number."""
    return -sum(amounts)
