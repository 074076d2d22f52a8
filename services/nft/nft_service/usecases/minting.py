"""Minting use cases: MintTickets (queue a payment's tickets), GetMintJob, and the operator's
list and requeue of failed mints (mintctl).

MintTickets writes the job, its tickets and their metadata documents in one transaction and
returns at once; the minters (jobs/minter.py) take it from the queue. Everything the mint will
carry is fixed now: the mint address (derived from (payment, ticket)), the name (the caller's,
else the default from the event name and the seat), the symbol, and the uri — the content
address of the metadata JSON, which can hold the mint address because that is known before the
mint exists. A second MintTickets for the same payment finds
the job (a redelivered event) and re-queues its failed tickets (an operator's retry).

The job keeps the trace context of the MintTickets request that created it: the minters
announce each ticket's TicketMinted or MintFailed in that trace (the purchase's), however much
later and in whichever process they mint it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from solders.pubkey import Pubkey

from meshkit.db import Database
from meshkit.events import TraceContext
from nft_service.adapters.chain.token import (
    MAX_TRANSACTION_SIZE,
    TOKEN_2022,
    estimated_mint_size,
    is_address,
    mint_address,
)
from nft_service.adapters.keys import Derivation
from nft_service.domain.errors import (
    MintJobNotFound,
    PaymentHasOtherMintJob,
    TicketsOfOtherPayment,
    raise_if,
)
from nft_service.domain.metadata import (
    canonical,
    max_uri_length,
    metadata_json,
    metadata_uri,
    onchain_metadata,
    token_name,
)
from nft_service.domain.model import JobView, MintRequest, TicketNft, TicketSpec
from nft_service.domain.rules import mint_violations
from nft_service.domain.states import MintState
from nft_service.store import metadata, mint_jobs, mint_queue, tickets

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MintingRules:
    """The settings MintTickets applies."""

    max_batch: int
    symbol: str


class Minting:
    """See the module docstring. `base_url()` is the metadata route's public base URL (known
    once the HTTP port is bound); `wake` is set on every new job so an idle minter in this
    process starts at once."""

    def __init__(
        self,
        *,
        db: Database,
        derivation: Derivation,
        payer: Pubkey,
        rules: MintingRules,
        base_url: Callable[[], str],
        wake: asyncio.Event,
    ) -> None:
        self._db = db
        self._derivation = derivation
        self._payer = payer
        self._rules = rules
        self._base_url = base_url
        self._wake = wake

    def _check(self, request: MintRequest, base: str) -> None:
        symbol, uri = self._rules.symbol, "u" * max_uri_length(base)

        def transaction_size(spec: TicketSpec) -> int:
            return estimated_mint_size(
                onchain_metadata(name=token_name(spec), symbol=symbol, uri=uri)
            )

        raise_if(
            mint_violations(
                request,
                max_batch=self._rules.max_batch,
                is_address=is_address,
                transaction_size=transaction_size,
                max_transaction_size=MAX_TRANSACTION_SIZE,
            )
        )

    def _new_tickets(
        self, request: MintRequest, base: str
    ) -> tuple[list[tickets.NewTicket], dict[str, bytes]]:
        custodial_wallet = str(self._derivation.custodial_address(request.buyer_id))
        documents: dict[str, bytes] = {}
        new: list[tickets.NewTicket] = []
        symbol = self._rules.symbol
        for position, spec in enumerate(request.tickets):
            seed = self._derivation.mint_seed(request.payment_id, spec.ticket_id)
            mint = str(mint_address(self._payer, seed))
            name = token_name(spec)
            sha, body = canonical(
                metadata_json(
                    spec, name=name, symbol=symbol, event_id=request.event_id, mint_address=mint
                )
            )
            documents[sha] = body
            new.append(
                tickets.NewTicket(
                    spec=spec,
                    position=position,
                    mint_address=mint,
                    mint_seed=seed,
                    owner_wallet=spec.owner_wallet or custodial_wallet,
                    custodial=not spec.owner_wallet,
                    token_name=name,
                    token_symbol=symbol,
                    metadata_sha=sha,
                    metadata_uri=metadata_uri(base, sha),
                )
            )
        return new, documents

    async def mint_tickets(self, request: MintRequest) -> JobView:
        """Queue the payment's tickets (or find its job and re-queue its failures); the job as
        queued, before any worker can have touched it."""
        base = self._base_url()
        self._check(request, base)
        job_id = uuid.uuid4()
        fingerprint = request.fingerprint()
        new, documents = self._new_tickets(request, base)
        trace = TraceContext.current()  # the minters announce the tickets' outcomes in it

        async def write(conn: asyncpg.Connection) -> tuple[JobView, bool]:
            created = await mint_jobs.insert(conn, job_id, request, trace=trace)
            if created is not None:
                await metadata.insert(conn, sorted(documents.items()))
                inserted = await tickets.insert_many(conn, created, new, str(TOKEN_2022))
                if len(inserted) < len(new):  # ticket ids of another payment: roll back
                    ids = {t.ticket_id for t in inserted}
                    raise TicketsOfOtherPayment(
                        sorted(t.spec.ticket_id for t in new if t.spec.ticket_id not in ids)
                    )
                return JobView(created, tuple(inserted)), True
            existing = await mint_jobs.by_payment(conn, request.payment_id)
            assert existing is not None  # the conflicting row, visible in this snapshot
            if existing.tickets_fingerprint != fingerprint:
                raise PaymentHasOtherMintJob(str(existing.id))
            requeued = await mint_queue.requeue_failed(conn, existing.id)
            if requeued:
                logger.warning(
                    "failed mints re-queued",
                    extra={"job_id": str(existing.id), "tickets": requeued},
                )
            # Read in the same transaction: the reply shows the job as queued.
            return JobView(existing, tuple(await tickets.of_job(conn, existing.id))), False

        view, created = await self._db.run_in_tx(write)
        self._wake.set()
        if created:
            logger.info(
                "mint job queued",
                extra={
                    "job_id": str(view.job.id),
                    "payment_id": request.payment_id,
                    "tickets": len(view.tickets),
                    "priority": int(request.priority),
                },
            )
        return view

    async def job(self, *, job_id: uuid.UUID | None = None, payment_id: str = "") -> JobView:
        """GetMintJob: by job id, or by payment id (one job per payment)."""
        async with self._db.acquire() as conn:
            found = await mint_jobs.view(conn, job_id=job_id, payment_id=payment_id)
        if found is None:
            raise MintJobNotFound()
        return found

    async def queue_depth(self) -> int:
        async with self._db.acquire() as conn:
            return await mint_queue.depth(conn)

    async def waiting_for_operator(self) -> dict[MintState, int]:
        """Tickets whose mint stopped for an operator now (FAILED, DEAD_LETTERED), by state."""
        async with self._db.acquire() as conn:
            return await mint_queue.stopped(conn)


# -- operator (mintctl) -------------------------------------------------------------------------


async def requeue_failed(db: Database, payment_ids: Sequence[str] | None) -> int:
    """FAILED and DEAD_LETTERED tickets of these payments (or all) back in the queue, attempts
    reset (not those being revoked); returns how many. Their mint addresses never change, so a
    mint that landed unseen is recognised on chain, never sent twice."""

    async def requeue(conn: asyncpg.Connection) -> int:
        count = 0
        for job_id in await mint_jobs.with_failures(conn, payment_ids):
            count += await mint_queue.requeue_failed(conn, job_id)
        return count

    return await db.run_in_tx(requeue)


async def failed_mints(db: Database, limit: int) -> list[TicketNft]:
    """FAILED and DEAD_LETTERED tickets, newest first."""
    async with db.acquire() as conn:
        return await mint_queue.failed(conn, limit)
