"""CalculateFees: a quote for a cart at a venue (read-only)."""

from __future__ import annotations

from collections.abc import Sequence

from meshkit.db import Database
from payment_service.domain.cart import price_cart
from payment_service.domain.fees import FeeQuote, Jurisdiction, Pricing, VenueTier
from payment_service.domain.model import LineItem
from payment_service.usecases.reads import venue_jurisdiction
from payment_service.usecases.tiers import VenueTiers


class Fees:
    """Fee quotes (build once at start)."""

    def __init__(
        self,
        *,
        db: Database,
        pricing: Pricing,
        tiers: VenueTiers,
        supported_currencies: Sequence[str],
    ) -> None:
        self.db = db
        self.pricing = pricing
        self.tiers = tiers
        self.supported_currencies = supported_currencies

    async def calculate(
        self,
        venue_id: str,
        currency: str,
        items: Sequence[LineItem],
        *,
        jurisdiction: Jurisdiction | None = None,
        tier: VenueTier | None = None,
    ) -> FeeQuote:
        """The venue's quote for the cart; `jurisdiction` / `tier` replace the venue's own."""
        cart = price_cart(currency, items, supported_currencies=self.supported_currencies)
        async with self.db.acquire() as conn:
            if jurisdiction is None:
                jurisdiction = await venue_jurisdiction(conn, venue_id)
            if tier is None:
                tier = await self.tiers.of(conn, venue_id)
        return self.pricing.quote(currency, cart.subtotal, cart.ticket_count, tier, jurisdiction)
