"""The mint queue: the `ticket_nfts` rows themselves, so a ticket's record and its queue entry
can never disagree.

Workers claim rows with `FOR UPDATE SKIP LOCKED` and take a lease (a token and an expiry) in the
same statement, then commit: the row lock lasts only for the claim, never across a chain call.
Every later write of the worker is conditional on its lease token, so a worker that lost its
lease (it was too slow and another took over) cannot overwrite the newer owner's writes; and on
the mint state machine (domain/states.py), so no write moves a ticket backwards. A crashed
worker's tickets are claimable again once the lease expires; since their state is SUBMITTED, the
next worker reads the chain before sending anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from nft_service.domain.model import TicketNft
from nft_service.domain.states import PENDING_STATES, MintState, NftStatus, sources
from nft_service.store.tickets import ticket_from_row, tickets_from_rows

_PENDING = [s.value for s in PENDING_STATES]
_FAILED = [MintState.FAILED.value, MintState.DEAD_LETTERED.value]


def _from(target: MintState) -> list[str]:
    return [s.value for s in sources(target)]


_CLAIM_SQL = """
WITH picked AS (
    SELECT ticket_id FROM ticket_nfts
    WHERE mint_state = ANY($4::text[])
      AND available_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY priority, available_at, job_id, position
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ticket_nfts t
SET lease_token = $2, lease_until = now() + make_interval(secs => $3),
    picked_at = coalesce(t.picked_at, now()), updated_at = now()
FROM picked
WHERE t.ticket_id = picked.ticket_id
RETURNING t.*
"""


async def claim(
    conn: asyncpg.Connection, limit: int, lease_token: uuid.UUID, lease_s: float
) -> list[TicketNft]:
    """Lease up to `limit` tickets that are due, in queue order (priority, then job)."""
    rows = await conn.fetch(_CLAIM_SQL, limit, lease_token, lease_s, _PENDING)
    tickets = tickets_from_rows(rows)
    return sorted(tickets, key=lambda t: (t.priority, t.job_id, t.position))


@dataclass(frozen=True, slots=True)
class Submission:
    ticket_id: str
    signature: str
    last_valid_block_height: int
    cost_lamports: int


async def mark_submitted(
    conn: asyncpg.Connection, lease_token: uuid.UUID, submissions: Sequence[Submission]
) -> set[str]:
    """Record (signature, attempt) of every send BEFORE it happens; return the tickets whose
    lease we still hold (only those may be sent)."""
    rows = await conn.fetch(
        """
        UPDATE ticket_nfts t
        SET mint_state = 'SUBMITTED', attempts = t.attempts + 1, signature = s.signature,
            signatures = array_append(t.signatures, s.signature),
            last_valid_block_height = s.lvbh, cost_lamports = s.cost,
            updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[])
            AS s(ticket_id, signature, lvbh, cost)
        WHERE t.ticket_id = s.ticket_id AND t.lease_token = $1
          AND t.mint_state = ANY($6::text[])
        RETURNING t.ticket_id
        """,
        lease_token,
        [s.ticket_id for s in submissions],
        [s.signature for s in submissions],
        [s.last_valid_block_height for s in submissions],
        [s.cost_lamports for s in submissions],
        _from(MintState.SUBMITTED),
    )
    return {r["ticket_id"] for r in rows}


async def mark_minted(
    conn: asyncpg.Connection,
    lease_token: uuid.UUID,
    minted: Sequence[tuple[str, str, int]],
) -> list[TicketNft]:
    """Record (ticket_id, signature, slot) of landed mints in one statement; returns the
    tickets whose lease we still held."""
    rows = await conn.fetch(
        """
        UPDATE ticket_nfts t
        SET mint_state = 'MINTED', status = 'ACTIVE', signature = m.signature,
            minted_slot = m.slot, minted_at = now(), lease_token = NULL, lease_until = NULL,
            error_code = NULL, error_message = NULL, updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::bigint[]) AS m(ticket_id, signature, slot)
        WHERE t.ticket_id = m.ticket_id AND t.lease_token = $1
          AND t.mint_state = ANY($5::text[])
        RETURNING t.*
        """,
        lease_token,
        [m[0] for m in minted],
        [m[1] for m in minted],
        [m[2] for m in minted],
        _from(MintState.MINTED),
    )
    return tickets_from_rows(rows)


async def mark_not_minted(
    conn: asyncpg.Connection,
    lease_token: uuid.UUID,
    ticket_id: str,
    state: MintState,
    delay: float,
    error_code: str,
    error_message: str,
) -> TicketNft | None:
    """Record a round that did not mint the ticket (retry later, or failed for good); None
    when the lease was lost."""
    status = NftStatus.FAILED.value if state.failed else None
    row = await conn.fetchrow(
        """
        UPDATE ticket_nfts
        SET mint_state = $3, status = coalesce($4, status),
            available_at = now() + make_interval(secs => $5),
            lease_token = NULL, lease_until = NULL,
            error_code = $6, error_message = $7, updated_at = now()
        WHERE ticket_id = $2 AND lease_token = $1 AND mint_state = ANY($8::text[])
        RETURNING *
        """,
        lease_token,
        ticket_id,
        state.value,
        status,
        delay,
        error_code,
        error_message[:500],
        _from(state),
    )
    return ticket_from_row(row) if row is not None else None


async def release(
    conn: asyncpg.Connection, lease_token: uuid.UUID, ticket_ids: Sequence[str]
) -> None:
    """Give tickets back to the queue unchanged (e.g. on shutdown before sending)."""
    await conn.execute(
        "UPDATE ticket_nfts SET lease_token = NULL, lease_until = NULL "
        "WHERE lease_token = $1 AND ticket_id = ANY($2::text[])",
        lease_token,
        list(ticket_ids),
    )


async def requeue_failed(conn: asyncpg.Connection, job_id: uuid.UUID) -> int:
    """Operator retry: put the job's FAILED and DEAD_LETTERED tickets back in the queue with
    their attempts reset (their mint address never changes, so nothing can mint twice)."""
    tag: str = await conn.execute(
        """
        UPDATE ticket_nfts
        SET mint_state = 'RETRYING', status = 'PENDING', attempts = 0,
            available_at = now(), lease_token = NULL, lease_until = NULL,
            error_code = NULL, error_message = NULL, updated_at = now()
        WHERE job_id = $1 AND mint_state = ANY($2::text[])
        """,
        job_id,
        _FAILED,
    )
    return int(tag.rsplit(" ", 1)[-1])


async def depth(conn: asyncpg.Connection) -> int:
    """Tickets waiting to be minted."""
    value = await conn.fetchval(
        "SELECT count(*) FROM ticket_nfts WHERE mint_state = ANY($1::text[])", _PENDING
    )
    return int(value or 0)


async def failed(conn: asyncpg.Connection, limit: int) -> list[TicketNft]:
    """FAILED and DEAD_LETTERED tickets, newest first."""
    rows = await conn.fetch(
        "SELECT * FROM ticket_nfts WHERE mint_state = ANY($1::text[]) "
        "ORDER BY updated_at DESC LIMIT $2",
        _FAILED,
        limit,
    )
    return tickets_from_rows(rows)
