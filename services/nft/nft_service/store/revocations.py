"""Revocations (domain/revocation.py) on the `ticket_nfts` rows, with the history in
`ticket_operations`.

Every write is one conditional UPDATE, so a revocation is accepted once and applied once however
requests, minters and crashes interleave:

  accept        cancels a mint that was never sent (CANCELLED, REVOKED) — conditional on no
                signature recorded, so it cannot pass a minter's `mark_submitted` (which takes
                the same row and needs QUEUED / SUBMITTED / RETRYING) — or records the request
                (the first one wins) and, when the ticket is minted or failed and nobody holds
                it, takes its lease for the caller to apply the revocation at once;
  claim         the minters' sweep: revocations still to apply on minted or failed tickets,
                due and not leased (SKIP LOCKED), leased to the sweeping worker;
  revoked / never_minted / requeued / release
                what the lease holder found: applied on chain, nothing on chain, the mint on
                chain after all (back to the mint queue), or try again after a delay.

The lease is the mint queue's (`lease_token`, `lease_until`, `available_at`): a minted ticket is
never in the mint queue, and a failed one goes back only through `requeued` here or an operator's
requeue, which skips tickets with a revocation.

A recorded request keeps its trace context (`revoke_traceparent`, `revoke_tracestate`): the
sweep applies it, and announces TicketRevoked, in the trace of the request (a refund's).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from meshkit.events import TraceContext
from nft_service.domain.model import RevocationRequest, TicketNft
from nft_service.store.tickets import METHOD_CODES, ticket_from_row, tickets_from_rows

# Revocations still to apply; repeated literally (the partial index's predicate, 0006).
_OPEN = "revoke_requested_at IS NOT NULL AND status <> 'REVOKED'"
_SETTLEABLE = "('MINTED', 'FAILED', 'DEAD_LETTERED')"

_CANCEL_SQL = """
UPDATE ticket_nfts
SET mint_state = 'CANCELLED', status = 'REVOKED', revoke_reason = $2, revocation_method = $3,
    revoke_note = $4, revoke_reference = $5, revoke_signature = '', revoke_requested_at = now(),
    revoked_at = now(), lease_token = NULL, lease_until = NULL, updated_at = now()
WHERE ticket_id = $1 AND status <> 'REVOKED' AND revoke_requested_at IS NULL
  AND mint_state IN ('QUEUED', 'RETRYING') AND cardinality(signatures) = 0
RETURNING *
"""

_RECORD_SQL = f"""
UPDATE ticket_nfts
SET revoke_reason = $2, revocation_method = $3, revoke_note = $4, revoke_reference = $5,
    revoke_requested_at = now(), updated_at = now(),
    revoke_traceparent = $8, revoke_tracestate = $9,
    lease_token = CASE WHEN mint_state IN {_SETTLEABLE}
        AND (lease_until IS NULL OR lease_until < now()) THEN $6 ELSE lease_token END,
    lease_until = CASE WHEN mint_state IN {_SETTLEABLE}
        AND (lease_until IS NULL OR lease_until < now())
        THEN now() + make_interval(secs => $7) ELSE lease_until END
WHERE ticket_id = $1 AND status <> 'REVOKED' AND revoke_requested_at IS NULL
RETURNING *, lease_token IS NOT DISTINCT FROM $6 AS leased
"""

_CLAIM_SQL = f"""
WITH picked AS (
    SELECT ticket_id FROM ticket_nfts
    WHERE {_OPEN} AND mint_state IN {_SETTLEABLE}
      AND available_at <= now() AND (lease_until IS NULL OR lease_until < now())
    ORDER BY available_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ticket_nfts t
SET lease_token = $2, lease_until = now() + make_interval(secs => $3)
FROM picked
WHERE t.ticket_id = picked.ticket_id
RETURNING t.*
"""

_OPERATION_SQL = """
INSERT INTO ticket_operations (id, ticket_id, kind, from_wallet, reason, method, reference_id,
    note, signature)
VALUES ($1, $2, 'REVOKE', $3, $4, $5, $6, $7, $8)
"""


@dataclass(frozen=True, slots=True)
class Accepted:
    """What `accept` did: `cancelled` (revoked at once, never minted), else recorded (`ticket`
    with the request; `leased`: the caller holds its lease and applies it now); `ticket` None
    when another request was accepted first (the caller reads the ticket as it stands)."""

    ticket: TicketNft | None
    cancelled: bool = False
    leased: bool = False


async def _history(conn: asyncpg.Connection, ticket: TicketNft, holder: str | None) -> None:
    method = ticket.revocation_method
    await conn.execute(
        _OPERATION_SQL,
        uuid.uuid4(),
        ticket.ticket_id,
        holder,
        int(ticket.revoke_reason or 0),
        METHOD_CODES[method] if method is not None else None,
        ticket.revoke_reference,
        ticket.revoke_note,
        ticket.revoke_signature or None,
    )


async def accept(
    conn: asyncpg.Connection,
    ticket_id: str,
    request: RevocationRequest,
    lease_token: uuid.UUID,
    lease_s: float,
    *,
    trace: TraceContext | None = None,
) -> Accepted:
    """Cancel the ticket's mint if it was never sent (revoked now, in the history), else record
    the request with `trace` (None: the current one, the request's) for whoever applies it
    (module docstring). Run in a transaction with the event of a cancellation."""
    args = (
        ticket_id,
        int(request.reason),
        METHOD_CODES[request.method],
        request.note,
        request.reference_id,
    )
    row = await conn.fetchrow(_CANCEL_SQL, *args)
    if row is not None:
        cancelled = ticket_from_row(row)
        await _history(conn, cancelled, None)
        return Accepted(cancelled, cancelled=True)
    if trace is None:
        trace = TraceContext.current()
    row = await conn.fetchrow(
        _RECORD_SQL,
        *args,
        lease_token,
        lease_s,
        trace.traceparent or None,
        trace.tracestate or None,
    )
    if row is None:
        return Accepted(None)
    return Accepted(ticket_from_row(row), leased=bool(row["leased"]))


@dataclass(frozen=True, slots=True)
class Due:
    """Revocations leased for the sweep: the tickets, and the trace context of each ticket's
    revocation request by ticket id."""

    tickets: list[TicketNft]
    traces: dict[str, TraceContext]


async def claim(
    conn: asyncpg.Connection, limit: int, lease_token: uuid.UUID, lease_s: float
) -> Due:
    """Lease up to `limit` revocations due on minted or failed tickets (the sweep)."""
    rows = await conn.fetch(_CLAIM_SQL, limit, lease_token, lease_s)
    traces = {
        r["ticket_id"]: TraceContext.of(r["revoke_traceparent"], r["revoke_tracestate"])
        for r in rows
    }
    return Due(tickets_from_rows(rows), traces)


async def revoked(
    conn: asyncpg.Connection,
    ticket_id: str,
    lease_token: uuid.UUID,
    *,
    holder: str,
    signature: str,
) -> TicketNft | None:
    """The minted ticket is revoked on chain (`signature`: the burn or freeze sent, empty when
    the chain already showed it revoked); None when our lease was lost."""
    row = await conn.fetchrow(
        f"""
        UPDATE ticket_nfts
        SET status = 'REVOKED', revoke_signature = $3, revoked_at = now(),
            lease_token = NULL, lease_until = NULL, updated_at = now()
        WHERE ticket_id = $1 AND lease_token = $2 AND {_OPEN} AND mint_state = 'MINTED'
        RETURNING *
        """,
        ticket_id,
        lease_token,
        signature,
    )
    if row is None:
        return None
    ticket = ticket_from_row(row)
    await _history(conn, ticket, holder)
    return ticket


async def never_minted(
    conn: asyncpg.Connection, ticket_id: str, lease_token: uuid.UUID
) -> TicketNft | None:
    """The failed ticket's mint is not on chain: revoked with nothing minted (CANCELLED); None
    when our lease was lost."""
    row = await conn.fetchrow(
        f"""
        UPDATE ticket_nfts
        SET mint_state = 'CANCELLED', status = 'REVOKED', revoke_signature = '',
            revoked_at = now(), lease_token = NULL, lease_until = NULL, updated_at = now()
        WHERE ticket_id = $1 AND lease_token = $2 AND {_OPEN}
          AND mint_state IN ('FAILED', 'DEAD_LETTERED')
        RETURNING *
        """,
        ticket_id,
        lease_token,
    )
    if row is None:
        return None
    ticket = ticket_from_row(row)
    await _history(conn, ticket, None)
    return ticket


async def requeued(conn: asyncpg.Connection, ticket_id: str, lease_token: uuid.UUID) -> bool:
    """The failed ticket's mint is on chain after all (it landed unseen): back in the mint queue,
    due now, so a minter records it minted (read from the chain first: it has been sent) and the
    sweep then revokes it."""
    tag: str = await conn.execute(
        """
        UPDATE ticket_nfts
        SET mint_state = 'RETRYING', status = 'PENDING', available_at = now(),
            lease_token = NULL, lease_until = NULL, updated_at = now()
        WHERE ticket_id = $1 AND lease_token = $2 AND mint_state IN ('FAILED', 'DEAD_LETTERED')
        """,
        ticket_id,
        lease_token,
    )
    return tag.endswith(" 1")


async def release(
    conn: asyncpg.Connection, ticket_id: str, lease_token: uuid.UUID, delay_s: float
) -> None:
    """Applying failed for now: give the lease back, due again after `delay_s`."""
    await conn.execute(
        "UPDATE ticket_nfts SET lease_token = NULL, lease_until = NULL, "
        "available_at = now() + make_interval(secs => $3) "
        "WHERE ticket_id = $1 AND lease_token = $2",
        ticket_id,
        lease_token,
        delay_s,
    )
