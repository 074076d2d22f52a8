"""SQL of the nft service: mint jobs and their queue, ticket records, metadata, operations.

The queue is the `ticket_nfts` table itself (one row per ticket), so a ticket's record and its
queue entry can never disagree. Workers claim rows with `FOR UPDATE SKIP LOCKED` and take a
lease (a token and an expiry) in the same statement, then commit: the row lock lasts only for
the claim, never across a chain call. Every later write of the worker is conditional on its
lease token, so a worker that lost its lease (it was too slow and another took over) cannot
overwrite the newer owner's writes. A crashed worker's tickets are claimable again once the lease
expires; since their state is SUBMITTED, the next worker reads the chain before sending anything.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from meshkit.db import Database
from nft_service.domain.model import MintState, NftStatus

Row: TypeAlias = Any  # asyncpg.Record (asyncpg ships no type information)


@dataclass(frozen=True, slots=True)
class NewTicket:
    """A ticket row to insert with its job."""

    ticket_id: str
    position: int
    mint_address: str
    mint_seed: str
    owner_wallet: str
    custodial: bool
    event_name: str
    venue_name: str
    event_starts_at: datetime | None
    section: str
    row: str
    seat: str
    ticket_type: str
    image_url: str
    attributes: dict[str, str]
    metadata_sha: str
    metadata_uri: str


@dataclass(frozen=True, slots=True)
class NewJob:
    id: uuid.UUID
    payment_id: str
    order_id: str
    event_id: str
    venue_id: str
    buyer_id: str
    priority: int
    tickets_fingerprint: bytes


class TicketConflict(Exception):
    """Some ticket ids already belong to another payment."""

    def __init__(self, ticket_ids: list[str]) -> None:
        super().__init__(", ".join(ticket_ids))
        self.ticket_ids = ticket_ids


async def _one(db: Database | asyncpg.Connection, query: str, *args: Any) -> Row | None:
    rows = await db.fetch(query, *args)
    return rows[0] if rows else None


# -- jobs ---------------------------------------------------------------------------------------


async def insert_job(
    conn: asyncpg.Connection,
    job: NewJob,
    tickets: Sequence[NewTicket],
    metadata: Sequence[tuple[str, bytes]],
    token_program: str,
) -> tuple[Row, bool]:
    """Insert the job and its tickets, or return the payment's existing job (created=False)."""
    created = await conn.fetchrow(
        """
        INSERT INTO mint_jobs
            (id, payment_id, order_id, event_id, venue_id, buyer_id, priority,
             tickets_fingerprint)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (payment_id) DO NOTHING
        RETURNING *
        """,
        job.id,
        job.payment_id,
        job.order_id,
        job.event_id,
        job.venue_id,
        job.buyer_id,
        job.priority,
        job.tickets_fingerprint,
    )
    if created is None:
        existing = await conn.fetchrow(
            "SELECT * FROM mint_jobs WHERE payment_id = $1", job.payment_id
        )
        return existing, False
    taken = await conn.fetch(
        "SELECT ticket_id FROM ticket_nfts WHERE ticket_id = ANY($1::text[])",
        [t.ticket_id for t in tickets],
    )
    if taken:
        raise TicketConflict(sorted(r["ticket_id"] for r in taken))
    await conn.executemany(
        "INSERT INTO nft_metadata (sha, body) VALUES ($1, $2) ON CONFLICT (sha) DO NOTHING",
        list(metadata),
    )
    await conn.copy_records_to_table(
        "ticket_nfts",
        columns=[
            "ticket_id",
            "job_id",
            "position",
            "payment_id",
            "order_id",
            "event_id",
            "venue_id",
            "buyer_id",
            "mint_address",
            "mint_seed",
            "token_program",
            "owner_wallet",
            "custodial",
            "event_name",
            "venue_name",
            "event_starts_at",
            "section",
            "row",
            "seat",
            "ticket_type",
            "image_url",
            "attributes",
            "metadata_sha",
            "metadata_uri",
            "priority",
        ],
        records=[
            (
                t.ticket_id,
                job.id,
                t.position,
                job.payment_id,
                job.order_id,
                job.event_id,
                job.venue_id,
                job.buyer_id,
                t.mint_address,
                t.mint_seed,
                token_program,
                t.owner_wallet,
                t.custodial,
                t.event_name,
                t.venue_name,
                t.event_starts_at,
                t.section,
                t.row,
                t.seat,
                t.ticket_type,
                t.image_url,
                json.dumps(t.attributes, sort_keys=True),
                t.metadata_sha,
                t.metadata_uri,
                job.priority,
            )
            for t in tickets
        ],
        schema_name=None,
    )
    return created, True


async def requeue_failed(conn: asyncpg.Connection, job_id: uuid.UUID) -> int:
    """Admin retry: put the job's FAILED and DEAD_LETTERED tickets back in the queue."""
    tag: str = await conn.execute(
        """
        UPDATE ticket_nfts
        SET mint_state = 'RETRYING', status = 'PENDING', attempts = 0,
            available_at = now(), lease_token = NULL, lease_until = NULL,
            error_code = NULL, error_message = NULL, updated_at = now()
        WHERE job_id = $1 AND mint_state IN ('FAILED', 'DEAD_LETTERED')
        """,
        job_id,
    )
    return int(tag.rsplit(" ", 1)[-1])


async def failed_mints(db: Database, limit: int) -> list[Row]:
    return await db.fetch(
        "SELECT * FROM ticket_nfts WHERE mint_state IN ('FAILED', 'DEAD_LETTERED') "
        "ORDER BY updated_at DESC LIMIT $1",
        limit,
    )


async def jobs_with_failures(
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


async def job_by(
    db: Database | asyncpg.Connection, *, job_id: uuid.UUID | None = None, payment_id: str | None
) -> tuple[Row | None, list[Row]]:
    if job_id is not None:
        job = await _one(db, "SELECT * FROM mint_jobs WHERE id = $1", job_id)
    else:
        job = await _one(db, "SELECT * FROM mint_jobs WHERE payment_id = $1", payment_id)
    if job is None:
        return None, []
    tickets = await db.fetch(
        "SELECT * FROM ticket_nfts WHERE job_id = $1 ORDER BY position", job["id"]
    )
    return job, list(tickets)


# -- queue --------------------------------------------------------------------------------------

_CLAIM_SQL = """
WITH picked AS (
    SELECT ticket_id FROM ticket_nfts
    WHERE mint_state IN ('QUEUED', 'SUBMITTED', 'RETRYING')
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


async def claim(db: Database, limit: int, lease_token: uuid.UUID, lease_s: float) -> list[Row]:
    async with db.transaction() as conn:
        rows = await conn.fetch(_CLAIM_SQL, limit, lease_token, lease_s)
    return sorted(rows, key=lambda r: (r["priority"], r["job_id"], r["position"]))


@dataclass(frozen=True, slots=True)
class Submission:
    ticket_id: str
    signature: str
    last_valid_block_height: int
    cost_lamports: int


async def mark_submitted(
    db: Database, lease_token: uuid.UUID, submissions: Sequence[Submission]
) -> set[str]:
    """Record (signature, attempt) of every send BEFORE it happens; return the tickets whose
    lease we still hold (only those may be sent)."""
    rows = await db.fetch(
        """
        UPDATE ticket_nfts t
        SET mint_state = 'SUBMITTED', attempts = t.attempts + 1, signature = s.signature,
            signatures = array_append(t.signatures, s.signature),
            last_valid_block_height = s.lvbh, cost_lamports = s.cost,
            updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[])
            AS s(ticket_id, signature, lvbh, cost)
        WHERE t.ticket_id = s.ticket_id AND t.lease_token = $1
        RETURNING t.ticket_id
        """,
        lease_token,
        [s.ticket_id for s in submissions],
        [s.signature for s in submissions],
        [s.last_valid_block_height for s in submissions],
        [s.cost_lamports for s in submissions],
    )
    return {r["ticket_id"] for r in rows}


async def mark_minted(
    conn: asyncpg.Connection,
    lease_token: uuid.UUID,
    minted: Sequence[tuple[str, str, int]],
) -> list[Row]:
    """Record (ticket_id, signature, slot) of landed mints in one statement; returns the rows
    whose lease we still held."""
    rows: list[Row] = await conn.fetch(
        """
        UPDATE ticket_nfts t
        SET mint_state = 'MINTED', status = 'ACTIVE', signature = m.signature,
            minted_slot = m.slot, minted_at = now(), lease_token = NULL, lease_until = NULL,
            error_code = NULL, error_message = NULL, updated_at = now()
        FROM unnest($2::text[], $3::text[], $4::bigint[]) AS m(ticket_id, signature, slot)
        WHERE t.ticket_id = m.ticket_id AND t.lease_token = $1
        RETURNING t.*
        """,
        lease_token,
        [m[0] for m in minted],
        [m[1] for m in minted],
        [m[2] for m in minted],
    )
    return rows


async def mark_not_minted(
    conn: asyncpg.Connection,
    lease_token: uuid.UUID,
    ticket_id: str,
    state: MintState,
    delay: float,
    error_code: str,
    error_message: str,
) -> Row | None:
    status = NftStatus.FAILED if state in (MintState.FAILED, MintState.DEAD_LETTERED) else None
    row: Row | None = await conn.fetchrow(
        """
        UPDATE ticket_nfts
        SET mint_state = $3, status = coalesce($4, status),
            available_at = now() + make_interval(secs => $5),
            lease_token = NULL, lease_until = NULL,
            error_code = $6, error_message = $7, updated_at = now()
        WHERE ticket_id = $2 AND lease_token = $1
        RETURNING *
        """,
        lease_token,
        ticket_id,
        state.value,
        status.value if status else None,
        delay,
        error_code,
        error_message[:500],
    )
    return row


async def release(db: Database, lease_token: uuid.UUID, ticket_ids: Sequence[str]) -> None:
    """Give tickets back to the queue unchanged (e.g. on shutdown before sending)."""
    await db.execute(
        "UPDATE ticket_nfts SET lease_token = NULL, lease_until = NULL "
        "WHERE lease_token = $1 AND ticket_id = ANY($2::text[])",
        lease_token,
        list(ticket_ids),
    )


async def queue_depth(db: Database) -> int:
    value = await _one(
        db,
        "SELECT count(*) AS n FROM ticket_nfts "
        "WHERE mint_state IN ('QUEUED', 'SUBMITTED', 'RETRYING')",
    )
    return int(value["n"]) if value else 0


# -- tickets ------------------------------------------------------------------------------------


async def ticket_by(
    db: Database | asyncpg.Connection,
    *,
    ticket_id: str | None = None,
    mint_address: str | None = None,
    for_update: bool = False,
) -> Row | None:
    lock = " FOR UPDATE" if for_update else ""
    if ticket_id is not None:
        return await _one(db, f"SELECT * FROM ticket_nfts WHERE ticket_id = $1{lock}", ticket_id)
    return await _one(db, f"SELECT * FROM ticket_nfts WHERE mint_address = $1{lock}", mint_address)


@dataclass(frozen=True, slots=True)
class ListFilter:
    owner_wallet: str = ""
    buyer_id: str = ""
    event_id: str = ""
    payment_id: str = ""
    statuses: tuple[str, ...] = ()

    def token_scope(self) -> str:
        return json.dumps(
            [self.owner_wallet, self.buyer_id, self.event_id, self.payment_id, self.statuses]
        )


def encode_page_token(scope: str, last_ticket_id: str) -> str:
    raw = json.dumps({"s": scope, "a": last_ticket_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(scope: str, token: str) -> str | None:
    """The ticket id to continue after, or None if the token is not one of ours for `scope`."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded))
        if data["s"] != scope:
            return None
        return str(data["a"])
    except (ValueError, KeyError, TypeError):
        return None


async def list_tickets(db: Database, filt: ListFilter, after: str, limit: int) -> list[Row]:
    clauses = ["ticket_id > $1"]
    args: list[Any] = [after]
    for column in ("owner_wallet", "buyer_id", "event_id", "payment_id"):
        value = getattr(filt, column)
        if value:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    if filt.statuses:
        args.append(list(filt.statuses))
        clauses.append(f"status = ANY(${len(args)}::text[])")
    args.append(limit)
    return await db.fetch(
        f"SELECT * FROM ticket_nfts WHERE {' AND '.join(clauses)} "
        f"ORDER BY ticket_id LIMIT ${len(args)}",
        *args,
    )


async def record_transfer(
    conn: asyncpg.Connection,
    *,
    ticket_id: str,
    from_wallet: str,
    to_wallet: str,
    custodial: bool,
    reason: int,
    reference_id: str,
    note: str,
    signature: str,
) -> Row:
    await conn.execute(
        "INSERT INTO ticket_operations (id, ticket_id, kind, from_wallet, to_wallet, reason, "
        "reference_id, note, signature) VALUES ($1, $2, 'TRANSFER', $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        ticket_id,
        from_wallet,
        to_wallet,
        reason,
        reference_id,
        note,
        signature,
    )
    row: Row = await conn.fetchrow(
        "UPDATE ticket_nfts SET owner_wallet = $2, custodial = $3, updated_at = now() "
        "WHERE ticket_id = $1 RETURNING *",
        ticket_id,
        to_wallet,
        custodial,
    )
    return row


async def record_revoke(
    conn: asyncpg.Connection,
    *,
    ticket_id: str,
    holder: str,
    reason: int,
    method: int,
    reference_id: str,
    note: str,
    signature: str,
) -> Row:
    await conn.execute(
        "INSERT INTO ticket_operations (id, ticket_id, kind, from_wallet, reason, method, "
        "reference_id, note, signature) VALUES ($1, $2, 'REVOKE', $3, $4, $5, $6, $7, $8)",
        uuid.uuid4(),
        ticket_id,
        holder,
        reason,
        method,
        reference_id,
        note,
        signature,
    )
    row: Row = await conn.fetchrow(
        """
        UPDATE ticket_nfts
        SET status = 'REVOKED', revoke_reason = $2, revocation_method = $3, revoke_note = $4,
            revoke_reference = $5, revoke_signature = $6, revoked_at = now(), updated_at = now()
        WHERE ticket_id = $1 RETURNING *
        """,
        ticket_id,
        reason,
        method,
        note,
        reference_id,
        signature,
    )
    return row


async def metadata_body(db: Database, sha: str) -> bytes | None:
    rows = await db.fetch("SELECT body FROM nft_metadata WHERE sha = $1", sha)
    return bytes(rows[0]["body"]) if rows else None


async def average_mint_cost(db: Database, sample: int = 100) -> int | None:
    rows = await db.fetch(
        "SELECT avg(cost_lamports)::bigint AS avg FROM ("
        " SELECT cost_lamports FROM ticket_nfts WHERE mint_state = 'MINTED'"
        " AND cost_lamports IS NOT NULL ORDER BY minted_at DESC LIMIT $1) recent",
        sample,
    )
    value = rows[0]["avg"] if rows else None
    return int(value) if value is not None else None
