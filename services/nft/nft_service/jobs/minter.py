"""Mint queue workers: claim tickets, mint each exactly once, record the outcome with its event.

One round of a worker (`mint_round`):

  1. claim up to N tickets (priority order, lease taken, with their buyers' contacts for the
     events; store/mint_queue.py);
  2. tickets that may already be on chain (SUBMITTED after a crash, or any earlier attempt) are
     read from the chain first — found there as our completed mint → MINTED, nothing is sent;
  3. the rest get a fresh blockhash and are signed, their mint accounts funded with the
     rent-exempt minimum at the rent read from the chain (a chain whose rent cannot be read is
     not ready: the round retries later, nothing sent); the signature of every send and what it
     costs the payer are written (SUBMITTED, attempt counted) BEFORE it is sent, only for
     tickets whose lease we still hold;
  4. sends run concurrently (bounded); each outcome is classified (domain/retry.py) — "already
     processed" and "account already in use" are checked on chain before anything is decided;
  5. the outcomes are written in one transaction with their events (TicketMinted, MintFailed):
     one UPDATE for the minted, one for the rest, one INSERT for the events, each update
     conditional on our lease and on the mint state machine. A ticket whose mint stops for an
     operator (FAILED, DEAD_LETTERED) counts in `nft_mint_dead_lettered_total` and announces
     MintFailed, unless its revocation was accepted meanwhile: then the sweep settles it.

After each mint round the same worker sweeps the revocations still to apply
(`revocation_round`, usecases/revocation.py): tickets revoked while their mint was in flight,
now minted (burned or frozen right after their mint) or failed (revoked with nothing minted),
and any revocation whose holder crashed or had to wait (its lease expired or came back due).

Exactly once rests on the chain, not on this process: the mint address follows from (payment,
ticket), its creation is the first instruction of the one atomic mint transaction, so however
many workers, retries or crashes send it, one creation can succeed and the rest fail harmlessly
(and are recognised as "already minted" by step 2 or 4).

Each ticket's work stays in the trace of the request behind it: TicketMinted and MintFailed
carry the trace context its job kept from MintTickets, the outcome of each ticket is logged in a
span of that trace ("mint outcome"), and a revocation is applied in a span of the trace of the
RevokeTicket request that asked for it (its TicketRevoked too). A round serves many purchases at
once, so the round itself has only a log-only trace of its own (meshkit.jobs), which is also
where the work of a job queued before traces were kept is logged and announced.

A `Minter` is a `meshkit.jobs.PollingWorker` built with everything it uses handed in
(`MinterDeps`): it reads no other object's attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import asyncpg
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from meshkit.db import Database
from meshkit.events import Staged, TraceContext
from meshkit.jobs import PollingWorker
from meshkit.tracing import continue_trace
from nft_service.adapters.chain import (
    Chain,
    ChainError,
    ErrorKind,
    RecentBlockhash,
    Rent,
    TxOutcome,
    TxStatus,
)
from nft_service.adapters.chain.token import (
    MINT_FUNDING,
    MintCost,
    mint_cost,
    mint_instructions,
    sign,
)
from nft_service.domain.metadata import default_name, onchain_metadata
from nft_service.domain.model import TicketNft
from nft_service.domain.retry import Decision, RetryPolicy, decide, not_sent
from nft_service.domain.states import MintState
from nft_service.store import mint_queue, revocations
from nft_service.usecases.events import TicketEvents
from nft_service.usecases.metrics import NftMetrics
from nft_service.usecases.onchain import TicketsOnChain
from nft_service.usecases.revocation import Revoker
from nft_service.usecases.sending import PlatformSender

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _in_trace(trace: TraceContext | None, name: str, attributes: dict[str, str]) -> Iterator[None]:
    """Run the block in a span of the stored `trace` (of the request behind a ticket's work);
    in the round's own span when there is none (queued before traces were kept)."""
    if not trace:
        yield
        return
    with continue_trace(
        trace.traceparent, trace.tracestate or None, name=name, attributes=attributes
    ):
        yield


@dataclass(frozen=True, slots=True)
class MinterSettings:
    batch: int
    """Tickets claimed per round."""
    lease_s: float
    """How long a claimed ticket stays with this worker."""
    poll_s: float
    """How long an idle worker waits for new work before looking again."""
    symbol: str
    """Token symbol of tickets queued without one of their own."""
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class MinterDeps:
    """Everything a minter uses, built once (app.py) and handed in."""

    db: Database
    chain: Chain
    payer: Keypair
    onchain: TicketsOnChain
    events: TicketEvents
    metrics: NftMetrics
    settings: MinterSettings
    wake: asyncio.Event
    """Set when work was queued in this process: an idle minter looks at once."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to write for one ticket at the end of a round."""

    ticket: TicketNft
    state: MintState
    signature: str = ""
    slot: int = 0
    delay: float = 0.0
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class _Built:
    ticket: TicketNft
    tx: Transaction
    cost: MintCost

    @property
    def signature(self) -> str:
        return str(self.tx.signatures[0])


class Minter(PollingWorker):
    """One queue worker (`kit.add_worker`); several are safe together, in one process or many.

    `step()` mints one round; while the queue is empty the worker waits up to `poll_s` for the
    wake event (set by MintTickets in this process), so new work starts at once."""

    def __init__(self, name: str, deps: MinterDeps, *, rng: random.Random | None = None) -> None:
        super().__init__(name, self.step, idle_s=deps.settings.poll_s, rng=rng, wake=deps.wake)
        self._db = deps.db
        self._chain = deps.chain
        self._payer = deps.payer
        self._payer_key = deps.payer.pubkey()  # derived from the secret on every call
        self._onchain = deps.onchain
        self._events = deps.events
        self._metrics = deps.metrics
        self._minted = deps.metrics.mints.labels("minted")
        self._settings = deps.settings
        self._policy = deps.settings.retry
        self._rng = rng or random.Random()
        self._revoker = Revoker(
            db=deps.db,
            sender=PlatformSender(deps.chain, deps.payer),
            onchain=deps.onchain,
            events=deps.events,
            metrics=deps.metrics,
        )

    async def step(self) -> bool:
        """One mint round, then one revocation sweep; True when either claimed work (look again
        at once)."""
        minted = await self.mint_round()
        revoked = await self.revocation_round()
        return minted + revoked > 0

    async def revocation_round(self) -> int:
        """Apply the revocations due on minted or failed tickets (module docstring), one at a
        time; returns how many were claimed."""
        token = uuid.uuid4()
        settings = self._settings
        async with self._db.acquire() as conn:
            due = await revocations.claim(conn, settings.batch, token, settings.lease_s)
        for ticket in due.tickets:
            retry_in = self._policy.backoff(3, self._rng)
            with _in_trace(
                due.traces.get(ticket.ticket_id),
                "apply revocation",
                {"nft.ticket_id": ticket.ticket_id, "nft.worker": self.name},
            ):
                # Shielded: a burn that landed must be recorded even when the worker is
                # stopping. (The shielded task inherits the revocation's trace.)
                await asyncio.shield(self._revoker.run(ticket, token, retry_in=retry_in))
        return len(due.tickets)

    async def mint_round(self) -> int:
        """One round (module docstring); returns the number of tickets claimed."""
        token = uuid.uuid4()
        settings = self._settings
        async with self._db.acquire() as conn:  # one statement: its own transaction
            lease = await mint_queue.claim(conn, settings.batch, token, settings.lease_s)
        claimed = lease.tickets
        if not claimed:
            return 0
        outcomes: list[Outcome] = []
        try:
            await self._process(claimed, token, outcomes)
        finally:
            # Shielded: a cancellation (shutdown) must not lose what already happened on chain.
            await asyncio.shield(self._finish(lease, token, outcomes))
        return len(claimed)

    async def _process(
        self, claimed: Sequence[TicketNft], token: uuid.UUID, out: list[Outcome]
    ) -> None:
        maybe_on_chain = [t for t in claimed if t.may_be_on_chain]
        to_send = [t for t in claimed if not t.may_be_on_chain]
        if maybe_on_chain:
            try:
                minted, squatted = await self._onchain.confirm_minted(maybe_on_chain)
            except ChainError as exc:
                out.extend(self._retry_later(t, exc) for t in maybe_on_chain)
                minted, squatted = {}, set()
                maybe_on_chain = []
            for ticket in maybe_on_chain:
                if ticket.ticket_id in minted:
                    signature = await self._onchain.landed_signature(ticket)
                    out.append(
                        Outcome(ticket, MintState.MINTED, signature, minted[ticket.ticket_id])
                    )
                    self._metrics.mints.labels("recovered").inc()
                elif ticket.ticket_id in squatted:
                    out.append(self._taken(ticket))
                else:
                    to_send.append(ticket)
        if not to_send:
            return
        try:
            rent = await self._chain.rent()
            blockhash = await self._chain.latest_blockhash()
        except ChainError as exc:
            out.extend(self._retry_later(t, exc) for t in to_send)
            return
        built = [self._build(t, blockhash, rent) for t in to_send]
        submissions = [
            mint_queue.Submission(
                ticket_id=b.ticket.ticket_id,
                signature=b.signature,
                last_valid_block_height=blockhash.last_valid_block_height,
                cost_lamports=b.cost.total,
                mint_size=b.cost.mint_size,
            )
            for b in built
        ]
        async with self._db.acquire() as conn:
            allowed = await mint_queue.mark_submitted(conn, token, submissions)
        built = [b for b in built if b.ticket.ticket_id in allowed]
        try:
            results: list[TxOutcome | BaseException] = list(
                await self._chain.submit_many([(b.tx, MINT_FUNDING) for b in built], blockhash)
            )
        except Exception as exc:  # a bug or an unexpected failure: it may have landed
            results = [exc] * len(built)
        verify: list[tuple[_Built, ChainError]] = []
        for item, result in zip(built, results, strict=True):
            attempts = item.ticket.attempts + 1
            if isinstance(result, BaseException):
                error = ChainError(ErrorKind.UNAVAILABLE, f"send failed: {result!r}")
                out.append(self._after_error(item.ticket, error, attempts, item.signature))
            elif result.status is TxStatus.LANDED:
                out.append(Outcome(item.ticket, MintState.MINTED, item.signature, result.slot))
            else:
                error = result.error or ChainError(ErrorKind.UNAVAILABLE, "no outcome")
                if error.kind in (ErrorKind.ALREADY_PROCESSED, ErrorKind.ACCOUNT_IN_USE):
                    verify.append((item, error))
                else:
                    out.append(self._after_error(item.ticket, error, attempts, item.signature))
        if verify:
            await self._verify(verify, out)

    def _build(self, ticket: TicketNft, blockhash: RecentBlockhash, rent: Rent) -> _Built:
        metadata = onchain_metadata(
            name=ticket.token_name or default_name(ticket.spec),
            symbol=ticket.token_symbol or self._settings.symbol,
            uri=ticket.metadata_uri,
        )
        cost = mint_cost(metadata, rent)
        ixs = mint_instructions(
            payer=self._payer_key,
            seed=ticket.mint_seed,
            holder=Pubkey.from_string(ticket.owner_wallet),
            metadata=metadata,
            mint_lamports=cost.mint_rent,
        )
        tx = sign(ixs, self._payer, blockhash.blockhash, self._payer_key)
        return _Built(ticket, tx, cost)

    async def _verify(self, items: Sequence[tuple[_Built, ChainError]], out: list[Outcome]) -> None:
        """ "Maybe it already landed": decide from the chain."""
        try:
            minted, squatted = await self._onchain.confirm_minted([b.ticket for b, _ in items])
        except ChainError as exc:
            out.extend(self._retry_later(b.ticket, exc) for b, _ in items)
            return
        for item, error in items:
            ticket_id = item.ticket.ticket_id
            if ticket_id in minted:
                signature = await self._onchain.landed_signature(item.ticket, item.signature)
                out.append(Outcome(item.ticket, MintState.MINTED, signature, minted[ticket_id]))
            elif ticket_id in squatted or error.kind is ErrorKind.ACCOUNT_IN_USE:
                out.append(self._taken(item.ticket))
            else:
                out.append(
                    self._after_error(
                        item.ticket,
                        ChainError(ErrorKind.CONFIRM_TIMEOUT, "already processed but not found"),
                        item.ticket.attempts + 1,
                        "",
                    )
                )

    @staticmethod
    def _taken(ticket: TicketNft) -> Outcome:
        return Outcome(
            ticket,
            MintState.FAILED,
            error_code="mint_address_taken",
            error_message="the mint address holds an account that is not this ticket's NFT",
        )

    def _outcome(
        self, ticket: TicketNft, decision: Decision, error: ChainError, sig: str
    ) -> Outcome:
        return Outcome(
            ticket,
            decision.state,
            sig,
            delay=decision.delay,
            error_code=error.kind.value,
            error_message=error.message,
        )

    def _retry_later(self, ticket: TicketNft, error: ChainError) -> Outcome:
        """The chain could not be asked: nothing was sent, so no attempt is counted."""
        decision = not_sent(
            ticket.mint_state,
            ticket.attempts,
            self._policy,
            retry_after=error.retry_after,
            rng=self._rng,
        )
        return self._outcome(ticket, decision, error, "")

    def _after_error(
        self, ticket: TicketNft, error: ChainError, attempts: int, signature: str
    ) -> Outcome:
        decision = decide(
            error.kind, attempts, self._policy, retry_after=error.retry_after, rng=self._rng
        )
        return self._outcome(ticket, decision, error, signature)

    async def _finish(
        self, lease: mint_queue.Claimed, token: uuid.UUID, out: list[Outcome]
    ) -> None:
        """Write every outcome (with its events) in one transaction; give back the rest."""
        decided = {o.ticket.ticket_id for o in out}

        async def write(conn: asyncpg.Connection) -> list[tuple[Outcome, TicketNft]]:
            minted = [o for o in out if o.state is MintState.MINTED]
            others = [o for o in out if o.state is not MintState.MINTED]
            contacts, traces = lease.contacts, lease.traces
            events: list[Staged] = []
            written: list[tuple[Outcome, TicketNft]] = []
            if minted:
                minted_at = await mint_queue.mark_minted(
                    conn, token, [(o.ticket.ticket_id, o.signature, o.slot) for o in minted]
                )
                for o in minted:
                    at = minted_at.get(o.ticket.ticket_id)
                    if at is None:  # the lease was lost
                        continue
                    ticket = o.ticket.minted(o.signature, o.slot, at)
                    events.append(
                        self._events.minted(
                            ticket, contacts[ticket.job_id], trace=traces.get(ticket.job_id) or None
                        )
                    )
                    written.append((o, ticket))
            if others:
                updated = {
                    t.ticket_id: t
                    for t in await mint_queue.mark_not_minted(
                        conn,
                        token,
                        [
                            mint_queue.NotMinted(
                                o.ticket.ticket_id, o.state, o.delay, o.error_code, o.error_message
                            )
                            for o in others
                        ],
                    )
                }
                for o in others:
                    row = updated.get(o.ticket.ticket_id)  # None: the lease was lost
                    if row is None:
                        continue
                    if o.state.failed and not row.revocation_pending:
                        contact = contacts[row.job_id]
                        events.append(
                            self._events.mint_failed(
                                row, contact, round_id=token, trace=traces.get(row.job_id) or None
                            )
                        )
                    written.append((o, row))
            await self._events.stage(conn, events)
            lost = decided - {ticket.ticket_id for _, ticket in written}
            if lost:
                logger.warning(
                    "mint lease lost; outcomes left to the new owner",
                    extra={"worker": self.name, "tickets": sorted(lost)},
                )
            return written

        if out:
            for outcome, ticket in await self._db.run_in_tx(write):
                with _in_trace(
                    lease.traces.get(ticket.job_id),
                    "mint outcome",
                    {
                        "nft.ticket_id": ticket.ticket_id,
                        "nft.mint_state": outcome.state.value,
                        "nft.worker": self.name,
                    },
                ):
                    self._observe(outcome, ticket)
        rest = [t.ticket_id for t in lease.tickets if t.ticket_id not in decided]
        if rest:
            # Not decided (cancelled mid-round): keep their state (SUBMITTED stays SUBMITTED,
            # so the next worker reads the chain first) and free them for another worker now.
            with contextlib.suppress(Exception):
                async with self._db.acquire() as conn:
                    await mint_queue.release(conn, token, rest)

    def _observe(self, outcome: Outcome, ticket: TicketNft) -> None:
        if outcome.state is MintState.MINTED:
            self._minted.inc()
            if ticket.minted_at is not None:
                self._metrics.queue_seconds.observe(
                    max(0.0, (ticket.minted_at - ticket.created_at).total_seconds())
                )
            logger.info(
                "ticket minted",
                extra={
                    "worker": self.name,
                    "ticket_id": ticket.ticket_id,
                    "payment_id": ticket.payment_id,
                    "mint_address": ticket.mint_address,
                    "signature": ticket.mint_signature,
                    "attempts": ticket.attempts,
                },
            )
            return
        label = outcome.state.value.lower()
        self._metrics.mints.labels(label if outcome.state.final else "retrying").inc()
        if outcome.state.failed and not ticket.revocation_pending:
            self._metrics.dead_lettered.labels(label).inc()
        log = logger.warning if outcome.state.final else logger.info
        log(
            "ticket not minted",
            extra={
                "worker": self.name,
                "ticket_id": ticket.ticket_id,
                "mint_address": ticket.mint_address,
                "attempts": ticket.attempts,
                "state": outcome.state.value,
                "error": outcome.error_code,
            },
        )
