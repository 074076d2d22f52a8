"""The platform's moves on a ticket: TransferTicket (resale, gift, withdrawal) with the permanent
delegate, and RevokeTicket (burn, or freeze the holder's account) after a refund or fraud.

The chain is read first (it, not our record, says who holds the ticket); the transaction is sent
and confirmed; then the record, the operations history and the event are written in one
transaction. A retry after a crash finds the chain already moved and only catches the record up.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from meshkit.db import Database
from nft_service.adapters.chain import Chain, ChainError, ErrorKind, TxStatus
from nft_service.adapters.chain.token import (
    TRANSFER_FUNDING,
    burn_instructions,
    freeze_instructions,
    is_address,
    sign,
    transfer_instructions,
)
from nft_service.adapters.keys import Derivation
from nft_service.domain.errors import (
    ChainRejected,
    ChainUnavailable,
    MintingWalletEmpty,
    TicketNoHolder,
    TicketNotFound,
    TicketNotMinted,
    TicketNotMintedYet,
    TicketRevoked,
    raise_if,
)
from nft_service.domain.model import RevocationMethod, RevokeReason, TicketNft, TransferReason
from nft_service.domain.rules import destination_violations
from nft_service.domain.states import PENDING_STATES, MintState, NftStatus
from nft_service.store import tickets
from nft_service.usecases.events import TicketEvents
from nft_service.usecases.onchain import TicketsOnChain

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Transfer:
    ticket: TicketNft
    from_wallet: str
    signature: str


@dataclass(frozen=True, slots=True)
class Revocation:
    ticket: TicketNft
    signature: str


def require_active(ticket: TicketNft) -> None:
    """Only a minted, unrevoked ticket can be moved or revoked."""
    if ticket.status is NftStatus.REVOKED:
        raise TicketRevoked()
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
        default_revocation: RevocationMethod,
    ) -> None:
        self._db = db
        self._chain = chain
        self._payer = payer
        self._payer_key = payer.pubkey()
        self._derivation = derivation
        self._onchain = onchain
        self._events = events
        self._default_revocation = default_revocation

    async def _ticket(self, ticket_id: str) -> TicketNft:
        async with self._db.acquire() as conn:
            found = await tickets.by_id(conn, ticket_id)
        if found is None:
            raise TicketNotFound()
        return found

    async def _send(
        self, instructions: Callable[[], list[Instruction]], funding: frozenset[int]
    ) -> str:
        """Sign with a fresh blockhash and submit; re-sign once if the blockhash expired."""
        for _ in range(2):
            try:
                blockhash = await self._chain.latest_blockhash()
                tx = sign(instructions(), self._payer, blockhash.blockhash, self._payer_key)
                outcome = await self._chain.submit(tx, blockhash, funding)
            except ChainError as exc:
                raise ChainUnavailable("the chain is not reachable", retry_after=1.0) from exc
            if outcome.status is TxStatus.LANDED:
                return str(outcome.signature)
            error = outcome.error
            if outcome.status is TxStatus.UNKNOWN or error is None or error.retryable:
                # It may still land: the client's retry (same key) reads the chain first.
                raise ChainUnavailable(
                    "the transaction was not confirmed; retry", retry_after=2.0
                ) from error
            if error.kind is ErrorKind.BLOCKHASH_EXPIRED:
                continue
            if error.kind is ErrorKind.INSUFFICIENT_FUNDS:
                raise MintingWalletEmpty()
            if error.kind is ErrorKind.ALREADY_PROCESSED:
                return str(outcome.signature)
            raise ChainRejected(error.message)
        raise ChainUnavailable("blockhash kept expiring; retry", retry_after=1.0)

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
            signature = await self._send(
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
        """Burn or freeze the ticket (`method`, or the service's default) and record why."""
        ticket = await self._ticket(ticket_id)
        if ticket.status is NftStatus.REVOKED:
            return Revocation(ticket, ticket.revoke_signature)
        require_active(ticket)
        chosen = method or self._default_revocation
        view = await self._onchain.view(ticket)
        signature = ""
        if view.exists and not view.revoked:
            if view.holder is None:
                raise TicketNoHolder()
            account = Pubkey.from_string(view.holder.account)
            mint = Pubkey.from_string(ticket.mint_address)
            builder = burn_instructions if chosen is RevocationMethod.BURN else freeze_instructions
            nonce = uuid.uuid4().hex[:12]
            signature = await self._send(
                lambda: builder(
                    payer=self._payer_key,
                    mint=mint,
                    account=account,
                    note=f"tickettoken revoke {ticket_id} {nonce}",
                ),
                frozenset(),
            )
        holder = view.holder_wallet or ticket.owner_wallet

        async def record(conn: asyncpg.Connection) -> TicketNft:
            revoked = await tickets.record_revoke(
                conn,
                ticket_id=ticket_id,
                holder=holder,
                reason=reason,
                method=chosen,
                reference_id=reference_id,
                note=note,
                signature=signature,
            )
            if revoked is None:  # a concurrent revoke recorded it first
                current = await tickets.by_id(conn, ticket_id)
                assert current is not None
                return current
            await self._events.revoked(conn, revoked)
            return revoked

        revoked = await self._db.run_in_tx(record)
        logger.info(
            "ticket revoked",
            extra={"ticket_id": ticket_id, "method": chosen.value, "signature": signature},
        )
        return Revocation(revoked, revoked.revoke_signature)
