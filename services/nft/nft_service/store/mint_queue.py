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
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from meshkit.events import TraceContext
from nft_service.domain.model import BuyerContact, TicketNft
from nft_service.domain.states import PENDING_STATES, MintState, sources
from nft_service.store.mint_jobs import contact_from_json
from nft_service.store.tickets import tickets_from_rows

_FAILED = [MintState.FAILED.value, MintState.DEAD_LETTERED.value]
# The pending states spelled out in the SQL, not passed as a parameter: only then can the planner
# prove the partial queue index's predicate (0002_nft.sql) and claim from the index instead of
# scanning and sorting every ticket ever minted.
_PENDING_IN = "(" + ", ".join(f"'{s.value}'" for s in PENDING_STATES) + ")"
# Every (target, source) pair of the mint state machine, for updates of many rows to different
# targets in one statement.
_MOVES = [(t.value, s.value) for t in MintState for s in sources(t)]


def _from(target: MintState) -> list[str]:
    return [s.value for s in sources(target)]


_CLAIM_SQL = f"""
WITH picked AS (
    SELECT ticket_id FROM ticket_nfts
    WHERE mint_state IN {_PENDING_IN}
      AND available_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
    ORDER BY priority, available_at, job_id, position
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE ticket_nfts t
SET lease_token = $2, lease_until = now() + make_interval(secs => $3),
    picked_at = coalesce(t.picked_at, now()), updated_at = now()
FROM picked, mint_jobs j
WHERE t.ticket_id = picked.ticket_id AND j.id = t.job_id
RETURNING t.*, j.buyer_contact, j.traceparent AS job_traceparent,
    j.tracestate AS job_tracestate
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    """Tickets leased for a round, with the buyer's contact and the trace context of their jobs
    (for the events the round will stage), by job id."""

    tickets: list[TicketNft]
    contacts: dict[uuid.UUID, BuyerContact]
    traces: dict[uuid.UUID, TraceContext] = field(default_factory=dict)


async def claim(
    conn: asyncpg.Connection, limit: int, lease_token: uuid.UUID, lease_s: float
) -> Claimed:
    """Lease up to `limit` tickets that are due, in queue order (priority, then job)."""
    rows = await conn.fetch(_CLAIM_SQL, limit, lease_token, lease_s)
    tickets = tickets_from_rows(rows)
    contacts = {r["job_id"]: contact_from_json(r["buyer_contact"]) for r in rows}
    traces = {r["job_id"]: TraceContext.of(r["job_traceparent"], r["job_tracestate"]) for r in rows}
    return Claimed(
        sorted(tickets, key=lambda t: (t.priority, t.job_id, t.position)), contacts, traces
    )


@dataclass(frozen=True, slots=True)
class Submission:
    ticket_id: str
    signature: str
    last_valid_block_height: int
    cost_lamports: int
    mint_size: int


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
            last_valid_block_height = s.lvbh, cost_lamports = s.cost, mint_size = s.size,
            updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::integer[])
            AS s(ticket_id, signature, lvbh, cost, size)
        WHERE t.ticket_id = s.ticket_id AND t.lease_token = $1
          AND t.mint_state = ANY($7::text[])
        RETURNING t.ticket_id
        """,
        lease_token,
        [s.ticket_id for s in submissions],
        [s.signature for s in submissions],
        [s.last_valid_block_height for s in submissions],
        [s.cost_lamports for s in submissions],
        [s.mint_size for s in submissions],
        _from(MintState.SUBMITTED),
    )
    return {r["ticket_id"] for r in rows}


async def mark_minted(
    conn: asyncpg.Connection,
    lease_token: uuid.UUID,
    minted: Sequence[tuple[str, str, int]],
) -> dict[str, datetime]:
    """Record (ticket_id, signature, slot) of landed mints in one statement; returns when each
    ticket whose lease we still held was recorded minted (the others are left alone)."""
    rows = await conn.fetch(
        """
        UPDATE ticket_nfts t
        SET mint_state = 'MINTED', status = 'ACTIVE', signature = m.signature,
            minted_slot = m.slot, minted_at = now(), lease_token = NULL, lease_until = NULL,
            error_code = NULL, error_message = NULL, updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::bigint[]) AS m(ticket_id, signature, slot)
        WHERE t.ticket_id = m.ticket_id AND t.lease_token = $1
          AND t.mint_state = ANY($5::text[])
        RETURNING t.ticket_id, t.minted_at
        """,
        lease_token,
        [m[0] for m in minted],
        [m[1] for m in minted],
        [m[2] for m in minted],
        _from(MintState.MINTED),
    )
    return {r["ticket_id"]: r["minted_at"] for r in rows}


@dataclass(frozen=True, slots=True)
class NotMinted:
    """A round that did not mint the ticket: retry later (`delay`), or failed for good."""

    ticket_id: str
    state: MintState
    delay: float
    error_code: str
    error_message: str


async def mark_not_minted(
    conn: asyncpg.Connection, lease_token: uuid.UUID, outcomes: Sequence[NotMinted]
) -> list[TicketNft]:
    """Record rounds that did not mint their tickets, in one statement; returns the tickets
    whose lease we still held (each moved only along the mint state machine)."""
    if not outcomes:
        return []
    rows = await conn.fetch(
        """
        UPDATE ticket_nfts t
        SET mint_state = o.state,
            status = CASE WHEN o.state = ANY($7::text[]) THEN 'FAILED' ELSE t.status END,
            available_at = now() + make_interval(secs => o.delay),
            lease_token = NULL, lease_until = NULL,
            error_code = o.code, error_message = o.message, updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::float8[], $5::text[], $6::text[])
                AS o(ticket_id, state, delay, code, message),
             unnest($8::text[], $9::text[]) AS m(target, source)
        WHERE t.ticket_id = o.ticket_id AND t.lease_token = $1
          AND m.target = o.state AND m.source = t.mint_state
        RETURNING t.*
        """,
        lease_token,
        [o.ticket_id for o in outcomes],
        [o.state.value for o in outcomes],
        [o.delay for o in outcomes],
        [o.error_code for o in outcomes],
        [o.error_message[:500] for o in outcomes],
        _FAILED,
        [target for target, _ in _MOVES],
        [source for _, source in _MOVES],
    )
    return tickets_from_rows(rows)


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
    their attempts reset (their mint address never changes, so nothing can mint twice). A
    ticket whose revocation was requested stays out: it is settled, never minted again."""
    tag: str = await conn.execute(
        """
        UPDATE ticket_nfts
        SET mint_state = 'RETRYING', status = 'PENDING', attempts = 0,
            available_at = now(), lease_token = NULL, lease_until = NULL,
            error_code = NULL, error_message = NULL, updated_at = now()
        WHERE job_id = $1 AND mint_state = ANY($2::text[]) AND revoke_requested_at IS NULL
        """,
        job_id,
        _FAILED,
    )
    return int(tag.rsplit(" ", 1)[-1])


async def depth(conn: asyncpg.Connection) -> int:
    """Tickets waiting to be minted."""
    value = await conn.fetchval(
        f"SELECT count(*) FROM ticket_nfts WHERE mint_state IN {_PENDING_IN}"
    )
    return int(value or 0)


async def stopped(conn: asyncpg.Connection) -> dict[MintState, int]:
    """Tickets waiting for an operator (FAILED, DEAD_LETTERED; not those being revoked), by
    state (every state present, 0 when none)."""
    rows = await conn.fetch(
        "SELECT mint_state, count(*) AS n FROM ticket_nfts "
        "WHERE mint_state IN ('FAILED', 'DEAD_LETTERED') AND revoke_requested_at IS NULL "
        "GROUP BY mint_state"
    )
    counts = {MintState.FAILED: 0, MintState.DEAD_LETTERED: 0}
    counts.update({MintState(r["mint_state"]): int(r["n"]) for r in rows})
    return counts


async def failed(conn: asyncpg.Connection, limit: int) -> list[TicketNft]:
    """FAILED and DEAD_LETTERED tickets, newest first."""
    rows = await conn.fetch(
        "SELECT * FROM ticket_nfts WHERE mint_state = ANY($1::text[]) "
        "ORDER BY updated_at DESC LIMIT $2",
        _FAILED,
        limit,
    )
    return tickets_from_rows(rows)
