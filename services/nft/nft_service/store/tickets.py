"""Ticket NFTs (`ticket_nfts`, one row per ticket) and the platform's moves on them
(`ticket_operations`: every transfer and revocation, with its signature).

The same rows are the mint queue (its statements are in `mint_queue.py`) and carry the
revocations (`revocations.py`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import asyncpg

from nft_service.domain.model import (
    ListFilter,
    MintJob,
    Priority,
    RevocationMethod,
    RevokeReason,
    TicketNft,
    TicketSpec,
    TransferReason,
)
from nft_service.domain.states import MintState, NftStatus

# Revocation methods as stored (the contract's RevocationMethod numbers).
METHOD_CODES = {RevocationMethod.BURN: 1, RevocationMethod.FREEZE: 2}
_METHODS = {code: method for method, code in METHOD_CODES.items()}
# Rows are mapped on every claim and poll: plain lookups instead of enum calls.
_STATUS = {s.value: s for s in NftStatus}
_MINT_STATE = {s.value: s for s in MintState}
_PRIORITY = {int(p): p for p in Priority}


@lru_cache(maxsize=4096)
def _attributes(text: str) -> Mapping[str, str]:
    """The attributes JSON, parsed once per distinct text (read-only: shared by tickets)."""
    return MappingProxyType(json.loads(text))


def ticket_from_row(row: asyncpg.Record) -> TicketNft:
    attributes = row["attributes"]
    reason = row["revoke_reason"]
    method = row["revocation_method"]
    return TicketNft(
        ticket_id=row["ticket_id"],
        job_id=row["job_id"],
        position=row["position"],
        payment_id=row["payment_id"],
        order_id=row["order_id"],
        event_id=row["event_id"],
        venue_id=row["venue_id"],
        buyer_id=row["buyer_id"],
        mint_address=row["mint_address"],
        mint_seed=row["mint_seed"],
        token_program=row["token_program"],
        owner_wallet=row["owner_wallet"],
        custodial=row["custodial"],
        event_name=row["event_name"],
        venue_name=row["venue_name"],
        event_starts_at=row["event_starts_at"],
        section=row["section"],
        row=row["row"],
        seat=row["seat"],
        ticket_type=row["ticket_type"],
        image_url=row["image_url"],
        attributes=_attributes(attributes) if attributes else {},
        metadata_sha=row["metadata_sha"],
        metadata_uri=row["metadata_uri"],
        token_name=row["token_name"] or "",
        token_symbol=row["token_symbol"] or "",
        status=_STATUS[row["status"]],
        mint_state=_MINT_STATE[row["mint_state"]],
        priority=_PRIORITY[row["priority"]],
        attempts=row["attempts"],
        picked_at=row["picked_at"],
        signature=row["signature"] or "",
        signatures=tuple(row["signatures"] or ()),
        cost_lamports=row["cost_lamports"],
        mint_size=row["mint_size"],
        error_code=row["error_code"] or "",
        error_message=row["error_message"] or "",
        minted_at=row["minted_at"],
        minted_slot=row["minted_slot"],
        revoke_reason=RevokeReason(reason) if reason else None,
        revocation_method=_METHODS.get(method) if method else None,
        revoke_note=row["revoke_note"] or "",
        revoke_reference=row["revoke_reference"] or "",
        revoke_signature=row["revoke_signature"] or "",
        revoked_at=row["revoked_at"],
        revoke_requested_at=row["revoke_requested_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def tickets_from_rows(rows: Sequence[asyncpg.Record]) -> list[TicketNft]:
    return [ticket_from_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class NewTicket:
    """One ticket of a new job: the requested facts, where it goes, its fixed mint address,
    what its mint will carry (name, symbol) and its metadata document."""

    spec: TicketSpec
    position: int
    mint_address: str
    mint_seed: str
    owner_wallet: str
    custodial: bool
    token_name: str
    token_symbol: str
    metadata_sha: str
    metadata_uri: str


# One row per ticket from arrays (the job's columns are the same for every row): one statement
# inserts the whole job and returns its rows, so nothing needs reading back.
_INSERT_SQL = """
INSERT INTO ticket_nfts (
    ticket_id, job_id, position, payment_id, order_id, event_id, venue_id, buyer_id,
    mint_address, mint_seed, token_program, owner_wallet, custodial, event_name, venue_name,
    event_starts_at, section, "row", seat, ticket_type, image_url, attributes, metadata_sha,
    metadata_uri, token_name, token_symbol, priority)
SELECT t.ticket_id, $1, t.position, $2, $3, $4, $5, $6,
    t.mint_address, t.mint_seed, $7, t.owner_wallet, t.custodial, t.event_name, t.venue_name,
    t.event_starts_at, t.section, t."row", t.seat, t.ticket_type, t.image_url, t.attributes::jsonb,
    t.metadata_sha, t.metadata_uri, t.token_name, t.token_symbol, $8
FROM unnest(
    $9::text[], $10::integer[], $11::text[], $12::text[], $13::text[], $14::boolean[],
    $15::text[], $16::text[], $17::timestamptz[], $18::text[], $19::text[], $20::text[],
    $21::text[], $22::text[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[]
) AS t(ticket_id, position, mint_address, mint_seed, owner_wallet, custodial, event_name,
       venue_name, event_starts_at, section, "row", seat, ticket_type, image_url, attributes,
       metadata_sha, metadata_uri, token_name, token_symbol)
ON CONFLICT (ticket_id) DO NOTHING
RETURNING *
"""


async def insert_many(
    conn: asyncpg.Connection, job: MintJob, tickets: Sequence[NewTicket], token_program: str
) -> list[TicketNft]:
    """Add the job's tickets to the queue (state QUEUED) in one statement; returns the rows
    inserted, in request order. A ticket id that exists already (under any payment) is not
    inserted: the caller compares and rolls back."""
    rows = await conn.fetch(
        _INSERT_SQL,
        job.id,
        job.payment_id,
        job.order_id,
        job.event_id,
        job.venue_id,
        job.buyer_id,
        token_program,
        int(job.priority),
        [t.spec.ticket_id for t in tickets],
        [t.position for t in tickets],
        [t.mint_address for t in tickets],
        [t.mint_seed for t in tickets],
        [t.owner_wallet for t in tickets],
        [t.custodial for t in tickets],
        [t.spec.event_name for t in tickets],
        [t.spec.venue_name for t in tickets],
        [t.spec.event_starts_at for t in tickets],
        [t.spec.section for t in tickets],
        [t.spec.row for t in tickets],
        [t.spec.seat for t in tickets],
        [t.spec.ticket_type for t in tickets],
        [t.spec.image_url for t in tickets],
        [json.dumps(dict(t.spec.attributes), sort_keys=True) for t in tickets],
        [t.metadata_sha for t in tickets],
        [t.metadata_uri for t in tickets],
        [t.token_name for t in tickets],
        [t.token_symbol for t in tickets],
    )
    return sorted(tickets_from_rows(rows), key=lambda t: t.position)


async def of_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> list[TicketNft]:
    """The job's tickets in request order."""
    rows = await conn.fetch("SELECT * FROM ticket_nfts WHERE job_id = $1 ORDER BY position", job_id)
    return tickets_from_rows(rows)


async def by_id(conn: asyncpg.Connection, ticket_id: str) -> TicketNft | None:
    row = await conn.fetchrow("SELECT * FROM ticket_nfts WHERE ticket_id = $1", ticket_id)
    return ticket_from_row(row) if row is not None else None


async def by_mint(conn: asyncpg.Connection, mint_address: str) -> TicketNft | None:
    row = await conn.fetchrow("SELECT * FROM ticket_nfts WHERE mint_address = $1", mint_address)
    return ticket_from_row(row) if row is not None else None


async def page(
    conn: asyncpg.Connection, filt: ListFilter, *, after: str | None, limit: int
) -> list[TicketNft]:
    """Tickets matching `filt`, by ticket id, after the id `after`."""
    clauses = ["ticket_id > $1"]
    args: list[Any] = [after or ""]  # ticket ids are never empty
    for column in ("owner_wallet", "buyer_id", "event_id", "payment_id"):
        value = getattr(filt, column)
        if value:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    if filt.statuses:
        args.append([s.value for s in filt.statuses])
        clauses.append(f"status = ANY(${len(args)}::text[])")
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT * FROM ticket_nfts WHERE {' AND '.join(clauses)} "
        f"ORDER BY ticket_id LIMIT ${len(args)}",
        *args,
    )
    return tickets_from_rows(rows)


async def record_transfer(
    conn: asyncpg.Connection,
    *,
    ticket_id: str,
    from_wallet: str,
    to_wallet: str,
    custodial: bool,
    reason: TransferReason,
    reference_id: str,
    note: str,
    signature: str,
) -> TicketNft:
    """The ticket now belongs to `to_wallet`; the move is kept in the operations history."""
    await conn.execute(
        "INSERT INTO ticket_operations (id, ticket_id, kind, from_wallet, to_wallet, reason, "
        "reference_id, note, signature) VALUES ($1, $2, 'TRANSFER', $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        ticket_id,
        from_wallet,
        to_wallet,
        int(reason),
        reference_id,
        note,
        signature,
    )
    row = await conn.fetchrow(
        "UPDATE ticket_nfts SET owner_wallet = $2, custodial = $3, updated_at = now() "
        "WHERE ticket_id = $1 RETURNING *",
        ticket_id,
        to_wallet,
        custodial,
    )
    return ticket_from_row(row)


async def average_mint_cost(conn: asyncpg.Connection, sample: int = 100) -> int | None:
    """What the last `sample` mints cost the payer on average (None before the first)."""
    value = await conn.fetchval(
        "SELECT avg(cost_lamports)::bigint FROM ("
        " SELECT cost_lamports FROM ticket_nfts WHERE mint_state = 'MINTED'"
        " AND cost_lamports IS NOT NULL ORDER BY minted_at DESC LIMIT $1) recent",
        sample,
    )
    return int(value) if value is not None else None
