"""Records ⇄ protos: the only place that knows both the table columns and the nft.proto shapes
(used by the servicer for responses and by the worker for outbox payloads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias, cast

from google.protobuf.timestamp_pb2 import Timestamp

from nft_service.domain.model import (
    JobStatus,
    MintRequest,
    MintState,
    Priority,
    TicketSpec,
    job_status,
)
from tickettoken.nft.v1 import nft_pb2

Row: TypeAlias = Any  # asyncpg.Record (asyncpg ships no type information)


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def mint_state_proto(state: str) -> int:
    return int(nft_pb2.MintState.Value(f"MINT_STATE_{state}"))


def ticket_nft(row: Row) -> nft_pb2.TicketNft:
    return nft_pb2.TicketNft(
        ticket_id=row["ticket_id"],
        mint_address=row["mint_address"],
        owner_wallet=row["owner_wallet"],
        custodial=row["custodial"],
        status=nft_pb2.TicketNftStatus.Value(f"TICKET_NFT_STATUS_{row['status']}"),
        payment_id=row["payment_id"],
        order_id=row["order_id"],
        event_id=row["event_id"],
        venue_id=row["venue_id"],
        buyer_id=row["buyer_id"],
        event_name=row["event_name"],
        venue_name=row["venue_name"],
        event_starts_at=ts(row["event_starts_at"]),
        section=row["section"],
        row=row["row"],
        seat=row["seat"],
        ticket_type=row["ticket_type"],
        metadata_uri=row["metadata_uri"],
        mint_signature=(row["signature"] or "") if row["mint_state"] == "MINTED" else "",
        token_program=row["token_program"],
        minted_at=ts(row["minted_at"]),
        revoke_reason=cast(Any, row["revoke_reason"] or 0),
        revocation_method=cast(Any, row["revocation_method"] or 0),
        revoked_at=ts(row["revoked_at"]),
        updated_at=ts(row["updated_at"]),
    )


def mint_result(row: Row) -> nft_pb2.TicketMintResult:
    return nft_pb2.TicketMintResult(
        ticket_id=row["ticket_id"],
        mint_address=row["mint_address"],
        owner_wallet=row["owner_wallet"],
        custodial=row["custodial"],
        state=cast(Any, mint_state_proto(row["mint_state"])),
        signature=row["signature"] or "",
        metadata_uri=row["metadata_uri"],
        attempts=row["attempts"],
        error_code=row["error_code"] or "",
        error_message=row["error_message"] or "",
        minted_at=ts(row["minted_at"]),
    )


def job_status_of(tickets: Sequence[Row]) -> JobStatus:
    return job_status(
        (MintState(t["mint_state"]) for t in tickets),
        touched=any(t["picked_at"] is not None for t in tickets),
    )


def mint_job(
    job: Row, tickets: Sequence[Row], *, only: Sequence[Row] | None = None
) -> nft_pb2.MintJob:
    """The job with every ticket (or just `only`, for a per-ticket event); its status is
    derived from all of its tickets."""
    status = job_status_of(tickets)
    updated = max([job["updated_at"], *(t["updated_at"] for t in tickets)])
    completed = None
    if status not in (JobStatus.QUEUED, JobStatus.RUNNING):
        completed = max(t["updated_at"] for t in tickets)
    return nft_pb2.MintJob(
        id=str(job["id"]),
        status=nft_pb2.MintJobStatus.Value(f"MINT_JOB_STATUS_{status.value}"),
        priority=job["priority"],
        payment_id=job["payment_id"],
        order_id=job["order_id"],
        event_id=job["event_id"],
        venue_id=job["venue_id"],
        buyer_id=job["buyer_id"],
        results=[mint_result(t) for t in (tickets if only is None else only)],
        created_at=ts(job["created_at"]),
        updated_at=ts(updated),
        completed_at=ts(completed),
    )


def mint_request(request: nft_pb2.MintTicketsRequest) -> MintRequest:
    priority = int(request.priority) or int(Priority.STANDARD)
    return MintRequest(
        payment_id=request.payment_id,
        order_id=request.order_id,
        event_id=request.event_id,
        venue_id=request.venue_id,
        buyer_id=request.buyer_id,
        priority=priority,
        tickets=tuple(
            TicketSpec(
                ticket_id=t.ticket_id,
                owner_wallet=t.owner_wallet,
                event_name=t.event_name,
                venue_name=t.venue_name,
                event_starts_at=(
                    t.event_starts_at.ToDatetime(tzinfo=UTC)
                    if t.HasField("event_starts_at")
                    else None
                ),
                section=t.section,
                row=t.row,
                seat=t.seat,
                ticket_type=t.ticket_type,
                image_url=t.image_url,
                attributes=dict(t.attributes),
            )
            for t in request.tickets
        ),
    )
