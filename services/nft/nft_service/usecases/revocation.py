"""Applying a revocation that was accepted (domain/revocation.py): the step RevokeTicket and the
minters share, run by whoever holds the ticket's lease (store/revocations.py).

  minted            the chain is read first (it, not our record, says whether the token is
                    still live): live → burn or freeze it as recorded; already burned or frozen
                    (a holder that crashed after sending) → nothing is sent. Then the record,
                    the history and TicketRevoked, in one transaction, conditional on the lease.
  failed or         the chain is read: our mint absent → revoked with nothing minted
  dead-lettered     (CANCELLED, TicketRevoked `never_minted`); present (it landed unseen) → back
                    in the mint queue, where a minter records it minted, then the sweep revokes.

So one burn or freeze at most lands per ticket: the lease admits one holder at a time, and a
holder that died after sending is followed by one that reads the chain before sending. When
applying fails for now (chain unreachable, payer empty, a refused transaction), the lease is
given back with a delay and the minters' sweep tries again; the revocation stays accepted.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from solders.pubkey import Pubkey

from meshkit.db import Database
from nft_service.adapters.chain import ChainError
from nft_service.adapters.chain.token import burn_instructions, freeze_instructions
from nft_service.domain.errors import ChainUnavailable, NftError, TicketNoHolder
from nft_service.domain.model import RevocationMethod, TicketNft
from nft_service.domain.states import MintState
from nft_service.store import revocations, tickets
from nft_service.usecases.events import TicketEvents
from nft_service.usecases.metrics import NftMetrics
from nft_service.usecases.onchain import TicketsOnChain
from nft_service.usecases.sending import PlatformSender

logger = logging.getLogger(__name__)


class Revoker:
    """See the module docstring (build once per use case or worker, share the parts)."""

    def __init__(
        self,
        *,
        db: Database,
        sender: PlatformSender,
        onchain: TicketsOnChain,
        events: TicketEvents,
        metrics: NftMetrics,
    ) -> None:
        self._db = db
        self._sender = sender
        self._onchain = onchain
        self._events = events
        self._metrics = metrics

    async def run(self, ticket: TicketNft, lease: uuid.UUID, *, retry_in: float) -> TicketNft:
        """Apply the accepted revocation of `ticket`, whose lease we hold; the ticket after it
        (REVOKED, or back in the mint queue, or as it was when applying must wait: then the
        lease is given back, due again in `retry_in` seconds or the error's hint)."""
        try:
            if ticket.mint_state is MintState.MINTED:
                done = await self._on_chain(ticket, lease)
            else:
                done = await self._settle_unminted(ticket, lease)
        except NftError as exc:
            delay = max(retry_in, exc.retry_after or 0.0)
            async with self._db.acquire() as conn:
                await revocations.release(conn, ticket.ticket_id, lease, delay)
            self._metrics.revocations.labels("retrying").inc()
            logger.warning(
                "revocation not applied yet; retried later",
                extra={"ticket_id": ticket.ticket_id, "error": exc.reason, "retry_in_s": delay},
            )
            return ticket
        if done is None:  # the lease was lost: whoever holds it now decides
            return await self._current(ticket.ticket_id)
        return done

    async def _current(self, ticket_id: str) -> TicketNft:
        async with self._db.acquire() as conn:
            found = await tickets.by_id(conn, ticket_id)
        assert found is not None  # tickets are never deleted
        return found

    async def _on_chain(self, ticket: TicketNft, lease: uuid.UUID) -> TicketNft | None:
        view = await self._onchain.view(ticket)
        signature = ""
        if view.exists and not view.revoked:
            if view.holder is None:
                raise TicketNoHolder()
            account = Pubkey.from_string(view.holder.account)
            mint = Pubkey.from_string(ticket.mint_address)
            builder = (
                freeze_instructions
                if ticket.revocation_method is RevocationMethod.FREEZE
                else burn_instructions
            )
            nonce = uuid.uuid4().hex[:12]
            signature = await self._sender.send(
                lambda: builder(
                    payer=self._sender.payer,
                    mint=mint,
                    account=account,
                    note=f"tickettoken revoke {ticket.ticket_id} {nonce}",
                ),
                frozenset(),
            )
        holder = view.holder_wallet or ticket.owner_wallet

        async def record(conn: asyncpg.Connection) -> TicketNft | None:
            done = await revocations.revoked(
                conn, ticket.ticket_id, lease, holder=holder, signature=signature
            )
            if done is not None:
                await self._events.revoked(conn, done)
            return done

        done = await self._db.run_in_tx(record)
        if done is not None:
            self._metrics.revocations.labels("revoked").inc()
            logger.info(
                "ticket revoked",
                extra={
                    "ticket_id": ticket.ticket_id,
                    "method": (ticket.revocation_method or RevocationMethod.BURN).value,
                    "signature": signature,
                },
            )
        return done

    async def _settle_unminted(self, ticket: TicketNft, lease: uuid.UUID) -> TicketNft | None:
        try:
            minted, _ = await self._onchain.confirm_minted([ticket])
        except ChainError as exc:
            raise ChainUnavailable("the chain cannot be read right now", retry_after=1.0) from exc
        if ticket.ticket_id in minted:
            async with self._db.acquire() as conn:
                moved = await revocations.requeued(conn, ticket.ticket_id, lease)
            if moved:
                logger.warning(
                    "failed mint found on chain; recorded by the minters, then revoked",
                    extra={"ticket_id": ticket.ticket_id, "mint_address": ticket.mint_address},
                )
            return await self._current(ticket.ticket_id)

        async def record(conn: asyncpg.Connection) -> TicketNft | None:
            done = await revocations.never_minted(conn, ticket.ticket_id, lease)
            if done is not None:
                await self._events.revoked(conn, done)
            return done

        done = await self._db.run_in_tx(record)
        if done is not None:
            self._metrics.revocations.labels("never_minted").inc()
            logger.info(
                "ticket revoked before it was minted",
                extra={"ticket_id": ticket.ticket_id, "was": ticket.mint_state.value},
            )
        return done
