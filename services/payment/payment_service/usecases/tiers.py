"""The venue's pricing tier, from its trailing 30-day sales in the ledger, cached per process.

The tier comes from a sum over every sale of the venue in 30 days: run on every quote and
payment, that sum grows with the venue's success (a busy venue sums tens of thousands of entries
per ticket sold). Tiers change at $10,000 and $100,000 per 30 days, so each process recomputes a
venue's tier at most every `ttl_s` seconds; a venue that crosses a threshold is priced at its new
tier that much later at most. Fees and payments share this one step.
"""

from __future__ import annotations

import time

import asyncpg

from payment_service.domain.fees import VenueTier, tier_for_volume
from payment_service.store import ledger


class VenueTiers:
    """`await tiers.of(conn, venue_id)`: the venue's tier, recomputed at most every `ttl_s`."""

    def __init__(self, *, ttl_s: float = 60.0, max_venues: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self._max = max_venues
        self._known: dict[str, tuple[float, VenueTier]] = {}

    async def of(self, conn: asyncpg.Connection, venue_id: str) -> VenueTier:
        now = time.monotonic()
        cached = self._known.get(venue_id)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        tier = tier_for_volume(await ledger.venue_volume(conn, venue_id))
        if len(self._known) >= self._max:
            self._known.clear()  # a bound, not an LRU: a full cache only costs one sum per venue
        self._known[venue_id] = (now, tier)
        return tier
