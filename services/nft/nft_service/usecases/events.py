"""The events this service announces: `tickettoken.nft.v1.{TicketMinted, MintFailed,
TicketTransferred, TicketRevoked}` (events.proto), each staged in the outbox inside the
transaction of the state change it announces (meshkit.events), aggregate = the ticket.

Event ids are derived from what happened, so a state change applied twice by racing paths
cannot be announced twice (the outbox refuses the second copy):

  TicketMinted       the ticket (it is minted once, at one address, ever)
  MintFailed         the ticket and the worker round (lease) that gave up on it
  TicketTransferred  the ticket and the transfer's signature (or, when the chain already had
                     it there, the record's version it caught up from)
  TicketRevoked      the ticket (revocation is final; `never_minted` when it was revoked
                     before anything reached the chain)

MintFailed is announced only when a mint stops for an operator: FAILED (a permanent error) or
DEAD_LETTERED (`dead_lettered`: retries exhausted); never for a round that will be retried, nor
for a ticket whose revocation is pending (its TicketRevoked follows). It carries what the buyer's
"ticket delayed" message needs: the contact, the ticket and the event.

The minter's round announces all its outcomes at once: `minted` and `mint_failed` build the
events and `stage` puts them in the outbox in one INSERT (`EventPublisher.publish_many`). Each
carries the trace context of the MintTickets request that queued its ticket (kept with the job),
so one purchase stays one trace through the queue; the other events are staged in the current
span's trace (the request's, or the revocation request's under which the sweep applies it).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message

from meshkit.convert import optional_timestamp
from meshkit.events import EventPublisher, Staged, TraceContext
from nft_service.domain.model import BuyerContact, RevocationMethod, TicketNft, TransferReason
from nft_service.domain.states import MintState
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import events_pb2, nft_pb2

AGGREGATE = "ticket"
_NAMESPACE = uuid.UUID("5d0a4a56-2f4e-4e55-9a53-0f5c1c7b6e21")
_METHODS = {
    RevocationMethod.BURN: nft_pb2.REVOCATION_METHOD_BURN,
    RevocationMethod.FREEZE: nft_pb2.REVOCATION_METHOD_FREEZE,
}


def event_id(kind: str, *parts: str) -> uuid.UUID:
    """A deterministic event id for `kind` of event about `parts`."""
    return uuid.uuid5(_NAMESPACE, "\x00".join(["nft", kind, *parts]))


def contact_proto(contact: BuyerContact) -> common_pb2.ContactInfo:
    return common_pb2.ContactInfo(**contact.fields)


def _purchase(ticket: TicketNft, contact: BuyerContact) -> dict[str, Any]:
    """The fields TicketMinted and MintFailed share: the ticket, its purchase, its buyer, the
    event and the seat."""
    return {
        "ticket_id": ticket.ticket_id,
        "payment_id": ticket.payment_id,
        "order_id": ticket.order_id,
        "event_id": ticket.event_id,
        "venue_id": ticket.venue_id,
        "buyer_id": ticket.buyer_id,
        "buyer_contact": contact_proto(contact),
        "event_name": ticket.event_name,
        "venue_name": ticket.venue_name,
        "event_starts_at": optional_timestamp(ticket.event_starts_at),
        "section": ticket.section,
        "row": ticket.row,
        "seat": ticket.seat,
        "ticket_type": ticket.ticket_type,
    }


class TicketEvents:
    """Builds and stages the ticket events (built once; `cluster` names the chain for
    explorer links)."""

    def __init__(self, publisher: EventPublisher, *, cluster: str) -> None:
        self._publisher = publisher
        self.cluster = cluster

    async def _publish(
        self, conn: asyncpg.Connection, event: Message, ticket_id: str, eid: uuid.UUID
    ) -> None:
        await self._publisher.publish(
            conn,
            event,
            aggregate_type=AGGREGATE,
            aggregate_id=ticket_id,
            event_id=eid,
        )

    async def stage(self, conn: asyncpg.Connection, events: Sequence[Staged]) -> None:
        """Put events built by `minted` / `mint_failed` in the outbox, in order, in one INSERT
        (inside the caller's transaction)."""
        await self._publisher.publish_many(conn, events)

    def minted(
        self, ticket: TicketNft, contact: BuyerContact, *, trace: TraceContext | None = None
    ) -> Staged:
        event = events_pb2.TicketMinted(
            **_purchase(ticket, contact),
            mint_address=ticket.mint_address,
            owner_wallet=ticket.owner_wallet,
            custodial=ticket.custodial,
            metadata_uri=ticket.metadata_uri,
            signature=ticket.mint_signature,
            cluster=self.cluster,
            minted_at=optional_timestamp(ticket.minted_at),
        )
        eid = event_id("minted", ticket.ticket_id)
        return Staged(event, AGGREGATE, ticket.ticket_id, eid, trace=trace)

    def mint_failed(
        self,
        ticket: TicketNft,
        contact: BuyerContact,
        *,
        round_id: uuid.UUID,
        trace: TraceContext | None = None,
    ) -> Staged:
        event = events_pb2.MintFailed(
            **_purchase(ticket, contact),
            error_code=ticket.error_code,
            error_message=ticket.error_message,
            attempts=ticket.attempts,
            dead_lettered=ticket.mint_state is MintState.DEAD_LETTERED,
            failed_at=optional_timestamp(ticket.updated_at),
        )
        eid = event_id("mint_failed", ticket.ticket_id, str(round_id))
        return Staged(event, AGGREGATE, ticket.ticket_id, eid, trace=trace)

    async def transferred(
        self,
        conn: asyncpg.Connection,
        ticket: TicketNft,
        *,
        from_wallet: str,
        to_user_id: str,
        reason: TransferReason,
        reference_id: str,
        signature: str,
        caught_up_from: datetime,
    ) -> None:
        event = events_pb2.TicketTransferred(
            ticket_id=ticket.ticket_id,
            mint_address=ticket.mint_address,
            from_wallet=from_wallet,
            to_wallet=ticket.owner_wallet,
            to_user_id=to_user_id,
            reason=int(reason),  # type: ignore[arg-type]
            reference_id=reference_id,
            signature=signature,
            transferred_at=optional_timestamp(ticket.updated_at),
        )
        what = signature or f"{ticket.owner_wallet}@{caught_up_from.isoformat()}"
        eid = event_id("transferred", ticket.ticket_id, what)
        await self._publish(conn, event, ticket.ticket_id, eid)

    async def revoked(self, conn: asyncpg.Connection, ticket: TicketNft) -> None:
        method = ticket.revocation_method
        event = events_pb2.TicketRevoked(
            ticket_id=ticket.ticket_id,
            mint_address=ticket.mint_address,
            payment_id=ticket.payment_id,
            buyer_id=ticket.buyer_id,
            reason=int(ticket.revoke_reason or 0),  # type: ignore[arg-type]
            method=_METHODS[method] if method is not None else 0,  # type: ignore[arg-type]
            reference_id=ticket.revoke_reference,
            signature=ticket.revoke_signature,
            revoked_at=optional_timestamp(ticket.revoked_at),
            never_minted=ticket.mint_state is MintState.CANCELLED,
        )
        await self._publish(conn, event, ticket.ticket_id, event_id("revoked", ticket.ticket_id))
