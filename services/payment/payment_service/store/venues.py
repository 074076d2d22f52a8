"""Venues' tax jurisdictions (written by the operator CLI `payment_service.venues`)."""

from __future__ import annotations

import asyncpg

from payment_service.domain.fees import Jurisdiction
from payment_service.store._sql import lock


async def upsert(conn: asyncpg.Connection, venue_id: str, j: Jurisdiction) -> None:
    await conn.execute(
        """
        INSERT INTO venues (id, country_code, region_code, locality, postal_code,
                            entertainment_tax)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (id) DO UPDATE SET
            country_code = EXCLUDED.country_code, region_code = EXCLUDED.region_code,
            locality = EXCLUDED.locality, postal_code = EXCLUDED.postal_code,
            entertainment_tax = EXCLUDED.entertainment_tax, updated_at = now()
        """,
        venue_id,
        j.country_code.upper(),
        j.region_code.upper(),
        j.locality,
        j.postal_code,
        j.entertainment_tax_applies,
    )


async def get(
    conn: asyncpg.Connection, venue_id: str, *, for_update: bool = False
) -> Jurisdiction | None:
    row = await conn.fetchrow(
        "SELECT country_code, region_code, locality, postal_code, entertainment_tax "
        "FROM venues WHERE id = $1" + lock(for_update),
        venue_id,
    )
    if row is None:
        return None
    return Jurisdiction(
        country_code=row["country_code"],
        region_code=row["region_code"],
        locality=row["locality"],
        postal_code=row["postal_code"],
        entertainment_tax_applies=row["entertainment_tax"],
    )
