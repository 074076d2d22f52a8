"""Mint queue workers: claim tickets, mint each exactly once, record the outcome with its event.

One round of a worker (`run_once`):

  1. claim up to N tickets (priority order, lease taken; store.py);
  2. tickets that may already be on chain (SUBMITTED after a crash, or any earlier attempt) are
     read from the chain first — found there as our completed mint → MINTED, nothing is sent;
  3. the rest get a fresh blockhash and are signed; the signature of every send is written
     (SUBMITTED, attempt counted) BEFORE it is sent, only for tickets whose lease we still hold;
  4. sends run concurrently (bounded); each outcome is classified (domain/retry.py) — "already
     processed" and "account already in use" are checked on chain before anything is decided;
  5. the outcomes are written in one transaction with their outbox events (`nft.minted`,
     `nft.mint_failed`), each update conditional on our lease.

Exactly once rests on the chain, not on this process: the mint address follows from (payment,
ticket), its creation is the first instruction of the one atomic mint transaction, so however
many workers, retries or crashes send it, one creation can succeed and the rest fail harmlessly
(and are recognised as "already minted" by step 2 or 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from nft_service import store
from nft_service.chain import ChainError, ErrorKind, TxOutcome, TxStatus
from nft_service.core import MINT_FUNDING, BuiltMint, NftCore
from nft_service.domain.model import MintState
from nft_service.domain.retry import RetryPolicy, decide

logger = logging.getLogger(__name__)

Row: TypeAlias = Any  # asyncpg.Record (asyncpg ships no type information)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to write for one ticket at the end of a round."""

    row: Row
    state: MintState
    signature: str = ""
    slot: int = 0
    delay: float = 0.0
    error_code: str = ""
    error_message: str = ""


class Minter:
    """One queue worker (`kit.add_worker`): `run()` until `stop()`; several are safe together,
    in one process or many."""

    def __init__(self, core: NftCore, name: str, *, rng: random.Random | None = None) -> None:
        self.core = core
        self.name = name
        settings = core.settings
        self.batch = settings.nft_worker_batch
        self.lease_s = settings.nft_worker_lease_s
        self.poll_s = settings.nft_worker_poll_s
        self.policy = RetryPolicy(
            max_attempts=settings.nft_max_attempts,
            base_delay=settings.nft_retry_base_s,
            max_delay=settings.nft_retry_max_s,
        )
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self.finished = asyncio.Event()  # set when run() has returned

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            self.finished.set()

    async def _loop(self) -> None:
        logger.info("mint worker started", extra={"worker": self.name})
        error_delay = self.poll_s
        while not self._stopping.is_set():
            try:
                claimed = await self.run_once()
            except Exception:
                logger.exception("mint worker round failed", extra={"worker": self.name})
                await self._idle(error_delay)
                error_delay = min(error_delay * 2, 30.0)
                continue
            error_delay = self.poll_s
            if claimed == 0:
                await self._idle(self.poll_s)
        logger.info("mint worker stopped", extra={"worker": self.name})

    async def _idle(self, seconds: float) -> None:
        # Wakes early on new work (MintTickets in this process) or on stop().
        wake = self.core.wake
        waiters = [
            asyncio.ensure_future(wake.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        wake.clear()

    async def run_once(self) -> int:
        """One round (module docstring); returns the number of tickets claimed."""
        token = uuid.uuid4()
        rows = await store.claim(self.core.db, self.batch, token, self.lease_s)
        if not rows:
            return 0
        outcomes: list[Outcome] = []
        try:
            await self._process(rows, token, outcomes)
        finally:
            # Shielded: a cancellation (shutdown) must not lose what already happened on chain.
            await asyncio.shield(self._finish(rows, token, outcomes))
        return len(rows)

    async def _process(self, rows: Sequence[Row], token: uuid.UUID, out: list[Outcome]) -> None:
        core = self.core
        maybe_on_chain = [r for r in rows if r["attempts"] > 0 or r["mint_state"] == "SUBMITTED"]
        to_send = [r for r in rows if r not in maybe_on_chain]
        if maybe_on_chain:
            try:
                minted, squatted = await core.minted_on_chain(maybe_on_chain)
            except ChainError as exc:
                out.extend(self._retry_later(r, exc) for r in maybe_on_chain)
                minted, squatted = {}, set()
                maybe_on_chain = []
            for row in maybe_on_chain:
                if row["ticket_id"] in minted:
                    signature = await core.landed_signature(row)
                    out.append(Outcome(row, MintState.MINTED, signature, minted[row["ticket_id"]]))
                    core.metrics.mints.labels("recovered").inc()
                elif row["ticket_id"] in squatted:
                    out.append(self._taken(row))
                else:
                    to_send.append(row)
        if not to_send:
            return
        try:
            blockhash = await core.chain.latest_blockhash()
        except ChainError as exc:
            out.extend(self._retry_later(r, exc) for r in to_send)
            return
        built = [core.build_mint(r, blockhash) for r in to_send]
        allowed = await store.mark_submitted(
            core.db,
            token,
            [
                store.Submission(
                    ticket_id=b.row["ticket_id"],
                    signature=str(b.tx.signatures[0]),
                    last_valid_block_height=blockhash.last_valid_block_height,
                    cost_lamports=b.cost,
                )
                for b in built
            ],
        )
        built = [b for b in built if b.row["ticket_id"] in allowed]
        try:
            results: list[TxOutcome | BaseException] = list(
                await core.chain.submit_many([(b.tx, MINT_FUNDING) for b in built], blockhash)
            )
        except Exception as exc:  # a bug or an unexpected failure: it may have landed
            results = [exc] * len(built)
        verify: list[tuple[BuiltMint, ChainError]] = []
        for item, result in zip(built, results, strict=True):
            attempts = item.row["attempts"] + 1
            signature = str(item.tx.signatures[0])
            if isinstance(result, BaseException):
                error = ChainError(ErrorKind.UNAVAILABLE, f"send failed: {result!r}")
                out.append(self._after_error(item.row, error, attempts, signature))
            elif result.status is TxStatus.LANDED:
                out.append(Outcome(item.row, MintState.MINTED, signature, result.slot))
            else:
                error = result.error or ChainError(ErrorKind.UNAVAILABLE, "no outcome")
                if error.kind in (ErrorKind.ALREADY_PROCESSED, ErrorKind.ACCOUNT_IN_USE):
                    verify.append((item, error))
                else:
                    out.append(self._after_error(item.row, error, attempts, signature))
        if verify:
            await self._verify(verify, out)

    async def _verify(
        self, items: Sequence[tuple[BuiltMint, ChainError]], out: list[Outcome]
    ) -> None:
        """ "Maybe it already landed": decide from the chain."""
        try:
            minted, squatted = await self.core.minted_on_chain([b.row for b, _ in items])
        except ChainError as exc:
            out.extend(self._retry_later(b.row, exc) for b, _ in items)
            return
        for item, error in items:
            ticket_id = item.row["ticket_id"]
            if ticket_id in minted:
                signature = await self.core.landed_signature(item.row, str(item.tx.signatures[0]))
                out.append(Outcome(item.row, MintState.MINTED, signature, minted[ticket_id]))
            elif ticket_id in squatted or error.kind is ErrorKind.ACCOUNT_IN_USE:
                out.append(self._taken(item.row))
            else:
                out.append(
                    self._after_error(
                        item.row,
                        ChainError(ErrorKind.CONFIRM_TIMEOUT, "already processed but not found"),
                        item.row["attempts"] + 1,
                        "",
                    )
                )

    def _taken(self, row: Row) -> Outcome:
        return Outcome(
            row,
            MintState.FAILED,
            error_code="mint_address_taken",
            error_message="the mint address holds an account that is not this ticket's NFT",
        )

    def _retry_later(self, row: Row, error: ChainError) -> Outcome:
        """The chain could not be asked: nothing was sent, so no attempt is counted."""
        state = MintState.SUBMITTED if row["mint_state"] == "SUBMITTED" else MintState.RETRYING
        delay = self.policy.backoff(max(1, row["attempts"]), self._rng)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return Outcome(
            row, state, delay=delay, error_code=error.kind.value, error_message=str(error)
        )

    def _after_error(self, row: Row, error: ChainError, attempts: int, signature: str) -> Outcome:
        decision = decide(
            error.kind, attempts, self.policy, retry_after=error.retry_after, rng=self._rng
        )
        return Outcome(
            row,
            decision.state,
            signature,
            delay=decision.delay,
            error_code=error.kind.value,
            error_message=error.message,
        )

    async def _finish(self, rows: Sequence[Row], token: uuid.UUID, out: list[Outcome]) -> None:
        """Write every outcome (with its events) in one transaction; give back the rest."""
        core = self.core
        decided = {o.row["ticket_id"] for o in out}

        async def write(conn: asyncpg.Connection) -> list[tuple[Outcome, Row]]:
            written: list[tuple[Outcome, Row]] = []
            minted = {o.row["ticket_id"]: o for o in out if o.state is MintState.MINTED}
            if minted:
                rows = await store.mark_minted(
                    conn, token, [(t, o.signature, o.slot) for t, o in minted.items()]
                )
                for row in rows:
                    await core.publish_minted(conn, row)
                    written.append((minted[row["ticket_id"]], row))
            for outcome in out:
                if outcome.state is MintState.MINTED:
                    continue
                row = await store.mark_not_minted(
                    conn,
                    token,
                    outcome.row["ticket_id"],
                    outcome.state,
                    outcome.delay,
                    outcome.error_code,
                    outcome.error_message,
                )
                if row is None:
                    continue
                if outcome.state in (MintState.FAILED, MintState.DEAD_LETTERED):
                    await core.publish_mint_failed(conn, row)
                written.append((outcome, row))
            lost = decided - {row["ticket_id"] for _, row in written}
            if lost:
                logger.warning(
                    "mint lease lost; outcomes left to the new owner",
                    extra={"worker": self.name, "tickets": sorted(lost)},
                )
            return written

        if out:
            written = await core.db.run_in_tx(write)
            for outcome, row in written:
                self._observe(outcome, row)
        rest = [r["ticket_id"] for r in rows if r["ticket_id"] not in decided]
        if rest:
            # Not decided (cancelled mid-round): keep their state (SUBMITTED stays SUBMITTED,
            # so the next worker reads the chain first) and free them for another worker now.
            with contextlib.suppress(Exception):
                await store.release(core.db, token, rest)

    def _observe(self, outcome: Outcome, row: Row) -> None:
        metrics = self.core.metrics
        extra = {
            "worker": self.name,
            "ticket_id": row["ticket_id"],
            "mint_address": row["mint_address"],
            "attempts": row["attempts"],
        }
        if outcome.state is MintState.MINTED:
            metrics.mints.labels("minted").inc()
            if row["minted_at"] is not None:
                metrics.queue_seconds.observe(
                    max(0.0, (row["minted_at"] - row["created_at"]).total_seconds())
                )
            logger.debug("ticket minted", extra={**extra, "signature": outcome.signature})
            return
        label = outcome.state.value.lower()
        metrics.mints.labels(label if outcome.state.final else "retrying").inc()
        log = logger.warning if outcome.state.final else logger.info
        log(
            "ticket not minted",
            extra={**extra, "state": outcome.state.value, "error": outcome.error_code},
        )
