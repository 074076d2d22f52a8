"""The platform's moves on a ticket: TransferTicket (resale, gift, withdrawal) with the permanent
delegate, and RevokeTicket (burn, or freeze the holder's account) after a refund or fraud.

Transfer: the chain is read first (it, not our record, says who holds the ticket); the
transaction is sent and confirmed; then the record, the operations history and the event are
written in one transaction. A retry after a crash finds the chain already moved and only catches
the record up.

Revoke (domain/revocation.py): the request is accepted in one statement whatever the ticket's
mint is doing — a mint never sent is cancelled there and then (revoked, nothing minted, with its
TicketRevoked); otherwise the request is recorded, and a minted (or failed) ticket's lease is
taken in the same statement so that this call applies it at once (usecases/revocation.py). A
mint in flight is left to finish: the answer is the ticket with `revocation_pending`, and the
minters revoke it right after it lands. The first accepted request's reason and method stand;
later requests answer the ticket as it stands. A ticket id never seen is NOT_FOUND with a retry
hint: a refund's revocation may overtake its payment's MintTickets, and the same request is
answered once the ticket exists.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import asyncpg
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from meshkit.db import Database
from nft_service.adapters.chain import Chain
from nft_service.adapters.chain.token import (
    TRANSFER_FUNDING,
    is_address,
    transfer_instructions,
)
from nft_service.adapters.keys import Derivation
from nft_service.domain.errors import (
    TicketNoHolder,
    TicketNotFound,
    TicketNotMinted,
    TicketNotMintedYet,
    TicketRevocationPending,
    TicketRevoked,
    raise_if,
)
from nft_service.domain.model import (
    RevocationMethod,
    RevocationRequest,
    RevokeReason,
    TicketNft,
    TransferReason,
)
from nft_service.domain.revocation import RevocationPath, revocation_path
from nft_service.domain.rules import destination_violations
from nft_service.domain.states import PENDING_STATES, MintState, NftStatus
from nft_service.store import revocations, tickets
from nft_service.usecases.events import TicketEvents
from nft_service.usecases.metrics import NftMetrics
from nft_service.usecases.onchain import TicketsOnChain
from nft_service.usecases.revocation import Revoker
from nft_service.usecases.sending import PlatformSender

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transfer:
    ticket: TicketNft
    from_wallet: str
    signature: str


@dataclass(frozen=True, slots=True)
class Revocation:
    """RevokeTicket's answer: the ticket as it stands (REVOKED, or `revocation_pending`) and the
    signature of the burn or freeze this call sent (empty when it sent none)."""

    ticket: TicketNft
    signature: str


# A refund's revocation that overtook its payment's MintTickets: ask again in a little while.
UNKNOWN_TICKET_RETRY_S = 2.0
# When applying a revocation must wait (chain unreachable, payer empty): the sweep's next try.
RETRY_REVOCATION_S = 1.0


def require_active(ticket: TicketNft) -> None:
    """Only a minted ticket that is not revoked (nor being revoked) can be moved."""
    if ticket.status is NftStatus.REVOKED:
        raise TicketRevoked()
    if ticket.revocation_pending:
        raise TicketRevocationPending()
    if ticket.mint_state in PENDING_STATES:
        raise TicketNotMintedYet()
    if ticket.mint_state is not MintState.MINTED:
        raise TicketNotMinted()


class Custody:
    """See the module docstring."""

    def __init__(
        self,
        *,
        db: Database,
        chain: Chain,
        payer: Keypair,
        derivation: Derivation,
        onchain: TicketsOnChain,
        events: TicketEvents,
        metrics: NftMetrics,
        default_revocation: RevocationMethod,
        lease_s: float,
    ) -> None:
        self._db = db
        self._sender = PlatformSender(chain, payer)
        self._payer_key = payer.pubkey()
        self._derivation = derivation
        self._onchain = onchain
        self._events = events
        self._metrics = metrics
        self._default_revocation = default_revocation
        self._lease_s = lease_s
        self._revoker = Revoker(
            db=db, sender=self._sender, onchain=onchain, events=events, metrics=metrics
        )

    async def _ticket(self, ticket_id: str, *, retry_after: float | None = None) -> TicketNft:
        async with self._db.acquire() as conn:
            found = await tickets.by_id(conn, ticket_id)
        if found is None:
            raise TicketNotFound(retry_after=retry_after)
        return found

    async def transfer(
        self,
        *,
        ticket_id: str,
        to_wallet: str,
        to_user_id: str,
        reason: TransferReason,
        reference_id: str,
        note: str,
    ) -> Transfer:
        """Move the ticket with the permanent delegate to `to_wallet`, or to the custodial
        wallet of `to_user_id`."""
        raise_if(destination_violations(to_wallet, to_user_id, is_address=is_address))
        if to_wallet:
            destination, custodial = Pubkey.from_string(to_wallet), False
        else:
            destination, custodial = self._derivation.custodial_address(to_user_id), True
        ticket = await self._ticket(ticket_id)
        require_active(ticket)
        view = await self._onchain.view(ticket)
        if view.revoked or not view.exists:
            raise TicketRevoked("the ticket is revoked on chain")
        if view.holder is None:
            raise TicketNoHolder()
        from_wallet, to = view.holder_wallet, str(destination)
        signature = ""
        if from_wallet != to:
            source = Pubkey.from_string(view.holder.account)
            nonce = uuid.uuid4().hex[:12]
            signature = await self._sender.send(
                lambda: transfer_instructions(
                    payer=self._payer_key,
                    mint=Pubkey.from_string(ticket.mint_address),
                    source=source,
                    destination_owner=destination,
                    note=f"tickettoken transfer {ticket_id} {nonce}",
                ),
                TRANSFER_FUNDING,
            )
        elif ticket.owner_wallet != from_wallet:
            # Already there on chain (a retry after a crash): only our record is behind.
            from_wallet = ticket.owner_wallet
        else:
            # Already there, and our record says so: nothing happened, nothing to announce.
            return Transfer(ticket, from_wallet, "")

        async def record(conn: asyncpg.Connection) -> TicketNft:
            moved = await tickets.record_transfer(
                conn,
                ticket_id=ticket_id,
                from_wallet=from_wallet,
                to_wallet=to,
                custodial=custodial,
                reason=reason,
                reference_id=reference_id,
                note=note,
                signature=signature,
            )
            await self._events.transferred(
                conn,
                moved,
                from_wallet=from_wallet,
                to_user_id="" if to_wallet else to_user_id,
                reason=reason,
                reference_id=reference_id,
                signature=signature,
                caught_up_from=ticket.updated_at,
            )
            return moved

        moved = await self._db.run_in_tx(record)
        logger.info(
            "ticket transferred", extra={"ticket_id": ticket_id, "to": to, "signature": signature}
        )
        return Transfer(moved, from_wallet, signature)

    async def revoke(
        self,
        *,
        ticket_id: str,
        reason: RevokeReason,
        method: RevocationMethod | None,
        reference_id: str,
        note: str,
    ) -> Revocation:
        """Revoke the ticket (`method`, or the service's default), now or once its mint in
        flight lands (module docstring), and record why."""
        ticket = await self._ticket(ticket_id, retry_after=UNKNOWN_TICKET_RETRY_S)
        path = revocation_path(ticket)
        if path is RevocationPath.ALREADY:
            return Revocation(ticket, ticket.revoke_signature)
        if path is RevocationPath.PENDING:
            return Revocation(ticket, "")
        request = RevocationRequest(
            reason=reason,
            method=method or self._default_revocation,
            reference_id=reference_id,
            note=note,
        )
        lease = uuid.uuid4()

        async def accept(conn: asyncpg.Connection) -> revocations.Accepted:
            accepted = await revocations.accept(conn, ticket_id, request, lease, self._lease_s)
            if accepted.cancelled and accepted.ticket is not None:
                await self._events.revoked(conn, accepted.ticket)
            return accepted

        accepted = await self._db.run_in_tx(accept)
        if accepted.ticket is None:  # another request was accepted first
            return Revocation(await self._ticket(ticket_id), "")
        if accepted.cancelled:
            self._metrics.revocations.labels("never_minted").inc()
            logger.info(
                "ticket revoked before it was minted",
                extra={"ticket_id": ticket_id, "was": ticket.mint_state.value},
            )
            return Revocation(accepted.ticket, "")
        if not accepted.leased:
            self._metrics.revocations.labels("after_mint").inc()
            logger.info(
                "revocation accepted; applied once the mint in flight lands",
                extra={"ticket_id": ticket_id, "mint_state": accepted.ticket.mint_state.value},
            )
            return Revocation(accepted.ticket, "")
        after = await self._revoker.run(accepted.ticket, lease, retry_in=RETRY_REVOCATION_S)
        sent = after.revoke_signature if after.status is NftStatus.REVOKED else ""
        return Revocation(after, sent)
