"""Refunds of payments."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from payment_service.domain.model import Refund, RefundReason
from payment_service.domain.settlement import Changes, RefundHold
from payment_service.domain.states import RefundStatus
from payment_service.store._sql import assignments, lock

UPDATABLE = frozenset({"status", "provider_refund_id", "failure_reason"})


def _refund(row: asyncpg.Record) -> Refund:
    return Refund(
        id=row["id"],
        seq=row["seq"],
        payment_id=row["payment_id"],
        status=RefundStatus[row["status"]],
        amount=row["amount"],
        currency=row["currency"],
        reason=RefundReason(row["reason"]),
        note=row["note"],
        ticket_ids=tuple(row["ticket_ids"]),
        provider_refund_id=row["provider_refund_id"],
        failure_reason=row["failure_reason"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert(
    conn: asyncpg.Connection, payment_id: uuid.UUID, currency: str, hold: RefundHold
) -> Refund:
    """A new PENDING refund (the caller holds its amount on the payment)."""
    row = await conn.fetchrow(
        """
        INSERT INTO refunds (id, payment_id, status, amount, currency, reason, note, ticket_ids,
                             provider_refund_id, created_by)
        VALUES ($1, $2, 'PENDING', $3, $4, $5, $6, $7, $8, $9)
        RETURNING *
        """,
        hold.refund_id,
        payment_id,
        hold.amount,
        currency,
        int(hold.reason),
        hold.note,
        list(hold.ticket_ids),
        hold.provider_refund_id,
        hold.created_by,
    )
    assert row is not None
    return _refund(row)


async def get(
    conn: asyncpg.Connection, refund_id: uuid.UUID, *, for_update: bool = False
) -> Refund | None:
    row = await conn.fetchrow("SELECT * FROM refunds WHERE id = $1" + lock(for_update), refund_id)
    return None if row is None else _refund(row)


async def find_by_provider_id(
    conn: asyncpg.Connection, provider_refund_id: str, *, for_update: bool = False
) -> Refund | None:
    row = await conn.fetchrow(
        "SELECT * FROM refunds WHERE provider_refund_id = $1" + lock(for_update),
        provider_refund_id,
    )
    return None if row is None else _refund(row)


async def of_payments(
    conn: asyncpg.Connection, payment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Refund]]:
    """Each payment's refunds, oldest first."""
    result: dict[uuid.UUID, list[Refund]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return result
    rows = await conn.fetch(
        "SELECT * FROM refunds WHERE payment_id = ANY($1::uuid[]) ORDER BY seq",
        list(payment_ids),
    )
    for row in rows:
        result[row["payment_id"]].append(_refund(row))
    return result


async def update(
    conn: asyncpg.Connection,
    refund_id: uuid.UUID,
    changes: Changes,
    *,
    status: RefundStatus | None = None,
) -> Refund:
    values = dict(changes)
    if status is not None:
        values["status"] = status.name
    if not values:
        refund = await get(conn, refund_id)
        if refund is None:
            raise LookupError(f"refund {refund_id} vanished")
        return refund
    sets, args = assignments(values, UPDATABLE, first=2)
    row = await conn.fetchrow(
        f"UPDATE refunds SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",
        refund_id,
        *args,
    )
    if row is None:
        raise LookupError(f"refund {refund_id} vanished")
    return _refund(row)


async def stuck(
    conn: asyncpg.Connection, *, older_than_s: float, limit: int, payment_ids: Sequence[uuid.UUID]
) -> list[Refund]:
    """Refunds still waiting for the provider's answer past the threshold."""
    rows = await conn.fetch(
        """
        SELECT * FROM refunds
        WHERE status IN ('PENDING', 'REQUIRES_ACTION')
          AND updated_at < now() - make_interval(secs => $1)
          AND (cardinality($3::uuid[]) = 0 OR payment_id = ANY($3::uuid[]))
        ORDER BY updated_at LIMIT $2
        """,
        float(older_than_s),
        limit,
        list(payment_ids),
    )
    return [_refund(r) for r in rows]
