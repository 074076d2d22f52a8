"""Fee and tax quotes: platform fee by venue tier, per-ticket gas, taxes by jurisdiction.

Every amount is integer minor units; every rate is basis points; every multiplication goes
through `money.apply_bps` (round half up). The parts of a quote add up to its total exactly:
total = subtotal + platform_fee + gas_fee + state_tax + local_tax + special_tax.

The seeds' worked examples, which the tests reproduce:
  2 tickets, 10 000 subtotal, Starter, Nashville → 820 + 100 + 700 + 225 → total 11 845;
  1 ticket, 10 000 subtotal, Pro, Nashville → 790 + 50 + 700 + 225 → total 11 765;
  taxes on 10 000 in Nashville with entertainment tax → 700 + 225 + 100 = 1 025.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from payment_service.domain.money import apply_bps


class VenueTier(enum.IntEnum):
    """Venue pricing tier (numbers match tickettoken.payment.v1.VenueTier)."""

    STARTER = 1
    PRO = 2
    ENTERPRISE = 3


PLATFORM_FEE_BPS: dict[VenueTier, int] = {
    VenueTier.STARTER: 820,
    VenueTier.PRO: 790,
    VenueTier.ENTERPRISE: 750,
}

# Trailing 30-day volume thresholds in minor units ($10 000 and $100 000 for USD).
PRO_FROM_MINOR = 1_000_000
ENTERPRISE_ABOVE_MINOR = 10_000_000


def tier_for_volume(volume_minor: int) -> VenueTier:
    """Starter under $10k per 30 days, Pro from $10k to $100k, Enterprise above $100k."""
    if volume_minor < PRO_FROM_MINOR:
        return VenueTier.STARTER
    if volume_minor <= ENTERPRISE_ABOVE_MINOR:
        return VenueTier.PRO
    return VenueTier.ENTERPRISE


# State (regional) sales tax rates in basis points. Rates with half a basis point (e.g.
# Minnesota 6.875 %) are rounded to the nearest whole basis point: the contract carries rates as
# integers. Local rates are listed per (state, locality); entertainment (amusement) tax applies
# only where the venue is flagged.
STATE_TAX_BPS: dict[str, int] = {
    "AL": 400, "AK": 0, "AZ": 560, "AR": 650, "CA": 725, "CO": 290, "CT": 635, "DE": 0,
    "DC": 600, "FL": 600, "GA": 400, "HI": 400, "ID": 600, "IL": 625, "IN": 700, "IA": 600,
    "KS": 650, "KY": 600, "LA": 500, "ME": 550, "MD": 600, "MA": 625, "MI": 600, "MN": 688,
    "MS": 700, "MO": 423, "MT": 0, "NE": 550, "NV": 685, "NH": 0, "NJ": 663, "NM": 488,
    "NY": 400, "NC": 475, "ND": 500, "OH": 575, "OK": 450, "OR": 0, "PA": 600, "RI": 700,
    "SC": 600, "SD": 420, "TN": 700, "TX": 625, "UT": 485, "VT": 600, "VA": 430, "WA": 650,
    "WV": 600, "WI": 500, "WY": 400,
}  # fmt: skip

LOCAL_TAX_BPS: dict[tuple[str, str], int] = {
    ("TN", "nashville"): 225,
}

DEFAULT_ENTERTAINMENT_TAX_BPS = 100


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """Where a venue is, for taxes (mirrors the contract's TaxJurisdiction)."""

    country_code: str
    region_code: str
    locality: str = ""
    postal_code: str = ""
    entertainment_tax_applies: bool = False


@dataclass(frozen=True, slots=True)
class TaxRates:
    state_bps: int
    local_bps: int
    special_bps: int


def tax_rates(
    jurisdiction: Jurisdiction, *, entertainment_tax_bps: int = DEFAULT_ENTERTAINMENT_TAX_BPS
) -> TaxRates:
    """Rates for a jurisdiction: US state table, local table, and the entertainment flag.

    Outside the US no sales tax is computed here (the venue's VAT is included in its prices).
    """
    if jurisdiction.country_code.upper() != "US":
        return TaxRates(0, 0, 0)
    region = jurisdiction.region_code.upper()
    state = STATE_TAX_BPS.get(region, 0)
    local = LOCAL_TAX_BPS.get((region, jurisdiction.locality.strip().lower()), 0)
    special = entertainment_tax_bps if jurisdiction.entertainment_tax_applies else 0
    return TaxRates(state, local, special)


@dataclass(frozen=True, slots=True)
class TaxQuote:
    jurisdiction: Jurisdiction
    rates: TaxRates
    state_tax: int
    local_tax: int
    special_tax: int

    @property
    def total_tax(self) -> int:
        return self.state_tax + self.local_tax + self.special_tax


def quote_taxes(subtotal: int, jurisdiction: Jurisdiction, rates: TaxRates) -> TaxQuote:
    """Each tax is its rate applied to the subtotal (taxes are never compounded)."""
    return TaxQuote(
        jurisdiction=jurisdiction,
        rates=rates,
        state_tax=apply_bps(subtotal, rates.state_bps),
        local_tax=apply_bps(subtotal, rates.local_bps),
        special_tax=apply_bps(subtotal, rates.special_bps),
    )


@dataclass(frozen=True, slots=True)
class FeeQuote:
    """A full breakdown; `total` is the sum of its parts by construction."""

    currency: str
    subtotal: int
    ticket_count: int
    tier: VenueTier
    platform_fee_bps: int
    platform_fee: int
    gas_fee_per_ticket: int
    gas_fee: int
    tax: TaxQuote

    @property
    def total(self) -> int:
        return self.subtotal + self.platform_fee + self.gas_fee + self.tax.total_tax

    @property
    def venue_payout(self) -> int:
        return self.subtotal

    def parts(self) -> dict[str, int]:
        """Where the buyer's money goes, by ledger destination (sums to `total`)."""
        return {
            "venue": self.subtotal,
            "platform": self.platform_fee,
            "gas": self.gas_fee,
            "tax": self.tax.total_tax,
        }


def quote(
    *,
    currency: str,
    subtotal: int,
    ticket_count: int,
    tier: VenueTier,
    jurisdiction: Jurisdiction,
    gas_fee_per_ticket: int,
    entertainment_tax_bps: int = DEFAULT_ENTERTAINMENT_TAX_BPS,
) -> FeeQuote:
    """The fee breakdown for a cart of `ticket_count` tickets worth `subtotal`."""
    if subtotal < 0 or ticket_count < 0 or gas_fee_per_ticket < 0:
        raise ValueError("quote() takes non-negative amounts")
    rate = PLATFORM_FEE_BPS[tier]
    rates = tax_rates(jurisdiction, entertainment_tax_bps=entertainment_tax_bps)
    return FeeQuote(
        currency=currency,
        subtotal=subtotal,
        ticket_count=ticket_count,
        tier=tier,
        platform_fee_bps=rate,
        platform_fee=apply_bps(subtotal, rate),
        gas_fee_per_ticket=gas_fee_per_ticket,
        gas_fee=gas_fee_per_ticket * ticket_count,
        tax=quote_taxes(subtotal, jurisdiction, rates),
    )


@dataclass(frozen=True, slots=True)
class Pricing:
    """This deployment's pricing settings, applied to every quote."""

    gas_fee_per_ticket: int
    entertainment_tax_bps: int = DEFAULT_ENTERTAINMENT_TAX_BPS

    def quote(
        self,
        currency: str,
        subtotal: int,
        ticket_count: int,
        tier: VenueTier,
        jurisdiction: Jurisdiction,
    ) -> FeeQuote:
        return quote(
            currency=currency,
            subtotal=subtotal,
            ticket_count=ticket_count,
            tier=tier,
            jurisdiction=jurisdiction,
            gas_fee_per_ticket=self.gas_fee_per_ticket,
            entertainment_tax_bps=self.entertainment_tax_bps,
        )
