"""Venue payouts."""

from __future__ import annotations

import uuid

import asyncpg

from payment_service.domain.model import NewPayout, Payout
from payment_service.domain.settlement import Changes
from payment_service.domain.states import PayoutStatus
from payment_service.store._sql import assignments, lock

UPDATABLE = frozenset(
    {"status", "provider_payout_id", "failure_code", "failure_message", "expected_arrival_at"}
)


def _payout(row: asyncpg.Record) -> Payout:
    return Payout(
        id=row["id"],
        venue_id=row["venue_id"],
        currency=row["currency"],
        status=PayoutStatus[row["status"]],
        amount=row["amount"],
        fee=row["fee"],
        net_amount=row["net_amount"],
        instant=row["instant"],
        statement_descriptor=row["statement_descriptor"],
        provider_payout_id=row["provider_payout_id"],
        failure_code=row["failure_code"],
        failure_message=row["failure_message"],
        expected_arrival_at=row["expected_arrival_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert(conn: asyncpg.Connection, p: NewPayout) -> Payout | None:
    """A new PENDING payout; None when a payout with this id already exists."""
    row = await conn.fetchrow(
        """
        INSERT INTO payouts (id, venue_id, currency, status, amount, fee, net_amount, instant,
                             statement_descriptor, created_by)
        VALUES ($1, $2, $3, 'PENDING', $4, $5, $6, $7, $8, $9)
        ON CONFLICT (id) DO NOTHING RETURNING *
        """,
        p.id,
        p.venue_id,
        p.currency,
        p.amount,
        p.fee,
        p.net_amount,
        p.instant,
        p.statement_descriptor,
        p.created_by,
    )
    return None if row is None else _payout(row)


async def get(
    conn: asyncpg.Connection, payout_id: uuid.UUID, *, for_update: bool = False
) -> Payout | None:
    row = await conn.fetchrow("SELECT * FROM payouts WHERE id = $1" + lock(for_update), payout_id)
    return None if row is None else _payout(row)


async def find_by_provider_id(
    conn: asyncpg.Connection, provider_payout_id: str, *, for_update: bool = False
) -> Payout | None:
    row = await conn.fetchrow(
        "SELECT * FROM payouts WHERE provider_payout_id = $1" + lock(for_update),
        provider_payout_id,
    )
    return None if row is None else _payout(row)


async def update(
    conn: asyncpg.Connection,
    payout_id: uuid.UUID,
    changes: Changes,
    *,
    status: PayoutStatus | None = None,
) -> Payout:
    values = dict(changes)
    if status is not None:
        values["status"] = status.name
    sets, args = assignments(values, UPDATABLE, first=2)
    row = await conn.fetchrow(
        f"UPDATE payouts SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",
        payout_id,
        *args,
    )
    if row is None:
        raise LookupError(f"payout {payout_id} vanished")
    return _payout(row)


async def paid_out_today(conn: asyncpg.Connection, venue_id: str, currency: str) -> int:
    """Payouts of the current UTC day that hold money (not failed or cancelled)."""
    value = await conn.fetchval(
        """
        SELECT coalesce(sum(amount), 0) FROM payouts
        WHERE venue_id = $1 AND currency = $2
          AND status NOT IN ('FAILED', 'CANCELLED')
          AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        """,
        venue_id,
        currency,
    )
    return int(value)
