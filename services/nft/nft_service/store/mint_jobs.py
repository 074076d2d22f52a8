"""Mint jobs: one durable job per payment (`mint_jobs`), with the buyer's contact and the trace
context of the MintTickets request for the events its tickets will announce. A job's status is
never stored; it is derived from its tickets, which `view` reads with the job in one statement
(GetMintJob is what clients poll)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import asyncpg

from meshkit.events import TraceContext
from nft_service.domain.model import BuyerContact, JobView, MintJob, MintRequest, Priority
from nft_service.store.tickets import ticket_from_row


def contact_from_json(text: str | None) -> BuyerContact:
    return BuyerContact(json.loads(text) if text else {})


def _job(row: asyncpg.Record) -> MintJob:
    return MintJob(
        id=row["id"],
        payment_id=row["payment_id"],
        order_id=row["order_id"],
        event_id=row["event_id"],
        venue_id=row["venue_id"],
        buyer_id=row["buyer_id"],
        priority=Priority(row["priority"]),
        tickets_fingerprint=bytes(row["tickets_fingerprint"]),
        buyer_contact=contact_from_json(row["buyer_contact"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def insert(
    conn: asyncpg.Connection,
    job_id: uuid.UUID,
    request: MintRequest,
    *,
    trace: TraceContext,
) -> MintJob | None:
    """Insert the payment's job, keeping the request's `trace` for its tickets' events; None
    when the payment already has one (which keeps the trace of the request that queued it)."""
    row = await conn.fetchrow(
        """
        INSERT INTO mint_jobs
            (id, payment_id, order_id, event_id, venue_id, buyer_id, priority,
             tickets_fingerprint, buyer_contact, traceparent, tracestate)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11)
        ON CONFLICT (payment_id) DO NOTHING
        RETURNING *
        """,
        job_id,
        request.payment_id,
        request.order_id,
        request.event_id,
        request.venue_id,
        request.buyer_id,
        int(request.priority),
        request.fingerprint(),
        json.dumps(dict(request.buyer_contact.fields), sort_keys=True),
        trace.traceparent or None,
        trace.tracestate or None,
    )
    return _job(row) if row is not None else None


async def by_payment(conn: asyncpg.Connection, payment_id: str) -> MintJob | None:
    row = await conn.fetchrow("SELECT * FROM mint_jobs WHERE payment_id = $1", payment_id)
    return _job(row) if row is not None else None


_VIEW_SQL = """
SELECT j AS job, t.*
FROM mint_jobs j LEFT JOIN ticket_nfts t ON t.job_id = j.id
WHERE {where}
ORDER BY t.position
"""
_VIEW_BY_ID = _VIEW_SQL.format(where="j.id = $1")
_VIEW_BY_PAYMENT = _VIEW_SQL.format(where="j.payment_id = $1")


async def view(
    conn: asyncpg.Connection, *, job_id: uuid.UUID | None = None, payment_id: str = ""
) -> JobView | None:
    """The job (by id, else by payment) with its tickets in request order."""
    if job_id is not None:
        rows = await conn.fetch(_VIEW_BY_ID, job_id)
    else:
        rows = await conn.fetch(_VIEW_BY_PAYMENT, payment_id)
    if not rows:
        return None
    tickets = tuple(ticket_from_row(r) for r in rows if r["ticket_id"] is not None)
    return JobView(_job(rows[0]["job"]), tickets)


async def with_failures(
    conn: asyncpg.Connection, payment_ids: Sequence[str] | None
) -> list[uuid.UUID]:
    """Jobs (of these payments, or all) that have FAILED or DEAD_LETTERED tickets."""
    rows = await conn.fetch(
        "SELECT DISTINCT job_id FROM ticket_nfts "
        "WHERE mint_state IN ('FAILED', 'DEAD_LETTERED') "
        "AND ($1::text[] IS NULL OR payment_id = ANY($1::text[]))",
        list(payment_ids) if payment_ids is not None else None,
    )
    return [r["job_id"] for r in rows]
