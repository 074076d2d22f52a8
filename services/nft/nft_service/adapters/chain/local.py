"""The local chain: LiteSVM (from `solders`) in-process, running the real SPL Token-2022, Associated
Token Account and Memo programs. Dev and tests only; production settings refuse it.

LiteSVM is synchronous (a mint executes in ~0.25 ms) and runs on the event loop's thread,
yielding to the loop about every millisecond of a batch (`_YIELD_S`) so gRPC and database work
interleave with a round of mints (not after every transaction: a loop turn per mint costs
more than it gains). A dedicated thread does not help: LiteSVM holds the GIL while it executes,
and measured on the 2-core dev box the thread was slower (170-200 vs 215-270 mints/s), re-taking
the GIL after every transaction and waiting up to the 5 ms switch interval while the loop is
busy.

LiteSVM keeps state in memory only. So that a restart of the nft process in dev mode finds the
tickets it minted, every account a landed transaction wrote (and every airdrop) is appended to a
JSON-lines file, and on start the file is compacted (last write per address wins) and loaded back
with `set_account`. The accounts of a batch (`submit_many`) are appended once, after its last
transaction (the payer, written by all of them, once); a crash can lose at most the lines of the
batch under way and those not yet flushed by the OS — transactions the process never reported
as landed, so the minter re-sends them after a restart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata

from nft_service.adapters.chain.base import (
    Accounts,
    Balance,
    RecentBlockhash,
    Rent,
    RentReader,
    TxOutcome,
    TxStatus,
    classify_transaction_error,
)
from nft_service.adapters.chain.token import TOKEN_2022, decode_token_account

logger = logging.getLogger(__name__)

T = TypeVar("T")

# LiteSVM accepts only its latest blockhash; report a nominal validity window for the interface.
_BLOCKHASH_WINDOW = 150
_YIELD_S = 0.001


def _account_json(key: Pubkey, account: Account | None) -> str:
    if account is None:
        return json.dumps({"k": str(key), "gone": True})
    return json.dumps(
        {
            "k": str(key),
            "l": account.lamports,
            "o": str(account.owner),
            "d": base64.b64encode(bytes(account.data)).decode(),
            "x": account.executable,
            "r": account.rent_epoch,
        }
    )


def _account_from(record: dict[str, Any]) -> Account:
    return Account(
        lamports=int(record["l"]),
        data=base64.b64decode(record["d"]),
        owner=Pubkey.from_string(record["o"]),
        executable=bool(record["x"]),
        rent_epoch=int(record["r"]),
    )


def writable_keys(tx: Transaction) -> list[Pubkey]:
    """The accounts a legacy transaction may write (from the message header's counts)."""
    message = tx.message
    header = message.header
    keys = message.account_keys
    signed = header.num_required_signatures
    signed_writable = signed - header.num_readonly_signed_accounts
    unsigned_writable_end = len(keys) - header.num_readonly_unsigned_accounts
    return [
        k for i, k in enumerate(keys) if i < signed_writable or signed <= i < unsigned_writable_end
    ]


class LocalChain:
    """`Chain` on an in-process LiteSVM (module docstring)."""

    def __init__(self, *, state_file: Path | None, cluster: str = "localnet") -> None:
        self._cluster = cluster
        self._state_file = state_file
        self._svm: LiteSVM | None = None
        self._log: IO[str] | None = None
        self._rent_cache: dict[int, int] = {}
        self._rent = RentReader(self.rent_exempt_minimum)
        self._height = 0
        # LiteSVM's blockhash never moves on its own, so re-signing the instructions of a
        # transaction that failed would give the same bytes ("already processed") forever. A
        # cluster moves on every slot; we move on after a failure, lazily, at the next request
        # for a blockhash (expiring at once would strand transactions signed but not yet sent).
        self._advance = False

    @property
    def cluster(self) -> str:
        return self._cluster

    async def rent(self) -> Rent:
        return await self._rent.get()

    @property
    def svm(self) -> LiteSVM:
        """The LiteSVM instance (tests read chain state through it)."""
        if self._svm is None:
            raise RuntimeError("local chain not started")
        return self._svm

    async def _run(self, fn: Callable[[], T]) -> T:
        result = fn()
        await asyncio.sleep(0)  # let other tasks run between transactions
        return result

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self._run(self._start_sync)
        await self._rent.try_read()

    def _start_sync(self) -> None:
        svm = LiteSVM()
        restored = 0
        if self._state_file is not None:
            restored = self._restore(svm, self._state_file)
            self._log = self._state_file.open("a", encoding="utf-8")
        self._svm = svm
        logger.info(
            "local chain ready",
            extra={
                "persisted_to": str(self._state_file) if self._state_file else None,
                "restored_accounts": restored,
            },
        )

    @staticmethod
    def _restore(svm: LiteSVM, path: Path) -> int:
        """Load the persisted accounts and compact the file to one line per account."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            return 0
        latest: dict[str, dict[str, Any]] = {}
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash
                latest[record["k"]] = record
        live = {k: r for k, r in latest.items() if not r.get("gone")}
        for key, record in live.items():
            svm.set_account(Pubkey.from_string(key), _account_from(record))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for record in live.values():
                out.write(json.dumps(record) + "\n")
        tmp.replace(path)
        return len(live)

    async def close(self) -> None:
        await self._run(self._close_sync)

    def _close_sync(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _persist(self, keys: Sequence[Pubkey]) -> None:
        if self._log is None or not keys:
            return
        svm = self.svm
        self._log.write("".join(_account_json(k, svm.get_account(k)) + "\n" for k in keys))
        self._log.flush()

    # -- Chain --------------------------------------------------------------------------------

    async def latest_blockhash(self) -> RecentBlockhash:
        def read() -> RecentBlockhash:
            if self._advance:
                self._advance = False
                self._expire_sync()
            return RecentBlockhash(self.svm.latest_blockhash(), self._height + _BLOCKHASH_WINDOW)

        return await self._run(read)

    async def submit(
        self,
        tx: Transaction,
        blockhash: RecentBlockhash,
        funding_instructions: frozenset[int] = frozenset(),
    ) -> TxOutcome:
        (outcome,) = await self.submit_many([(tx, funding_instructions)], blockhash)
        return outcome

    async def submit_many(
        self,
        items: Sequence[tuple[Transaction, frozenset[int]]],
        blockhash: RecentBlockhash,
    ) -> list[TxOutcome]:
        written: dict[Pubkey, None] = {}  # every account the batch wrote, in order, once
        outcomes: list[TxOutcome] = []
        try:
            turn = time.perf_counter()
            for tx, funding in items:
                outcomes.append(self._submit_sync(tx, funding, written))
                if time.perf_counter() - turn >= _YIELD_S:
                    await asyncio.sleep(0)  # let other tasks run
                    turn = time.perf_counter()
        finally:
            self._persist(list(written))
        await asyncio.sleep(0)
        return outcomes

    def _submit_sync(
        self, tx: Transaction, funding: frozenset[int], written: dict[Pubkey, None]
    ) -> TxOutcome:
        svm = self.svm
        signature = tx.signatures[0]
        result = svm.send_transaction(tx)
        slot = svm.get_clock().slot
        if isinstance(result, TransactionMetadata):
            written.update(dict.fromkeys(writable_keys(tx)))
            return TxOutcome(TxStatus.LANDED, signature, slot)
        assert isinstance(result, FailedTransactionMetadata)
        self._advance = True
        return TxOutcome(
            TxStatus.FAILED, signature, slot, classify_transaction_error(result.err(), funding)
        )

    async def landed(self, signatures: Sequence[Signature]) -> Signature | None:
        def find() -> Signature | None:
            for signature in signatures:
                if isinstance(self.svm.get_transaction(signature), TransactionMetadata):
                    return signature
            return None

        return await self._run(find)

    async def get_accounts(self, keys: Sequence[Pubkey]) -> Accounts:
        def read() -> Accounts:
            svm = self.svm
            return Accounts(svm.get_clock().slot, [svm.get_account(k) for k in keys])

        return await self._run(read)

    async def get_balance(self, key: Pubkey) -> Balance:
        def read() -> Balance:
            svm = self.svm
            return Balance(svm.get_clock().slot, svm.get_balance(key) or 0)

        return await self._run(read)

    async def rent_exempt_minimum(self, size: int) -> int:
        cached = self._rent_cache.get(size)
        if cached is None:
            cached = await self._run(lambda: self.svm.minimum_balance_for_rent_exemption(size))
            self._rent_cache[size] = cached
        return cached

    async def token_accounts_of_mint(self, mint: Pubkey) -> list[Pubkey]:
        # A scan of every Token-2022 account: fine for a dev chain, used only when the holder is
        # not where our record says (a holder moved the token themselves).
        def scan() -> list[Pubkey]:
            found: list[tuple[int, Pubkey]] = []
            for key, account in self.svm.get_program_accounts(TOKEN_2022):
                data = bytes(account.data)
                if (
                    len(data) < 165
                    or data[:32] != bytes(mint)
                    or (len(data) > 165 and data[165] != 2)
                ):
                    continue
                state = decode_token_account(data)
                if state.amount > 0:
                    found.append((state.amount, key))
            return [key for _, key in sorted(found, key=lambda item: -item[0])]

        return await self._run(scan)

    async def fund(self, key: Pubkey, lamports: int) -> None:
        def airdrop() -> None:
            self.svm.airdrop(key, lamports)
            self._persist([key])

        await self._run(airdrop)

    # -- test support -------------------------------------------------------------------------

    async def expire_blockhash(self) -> None:
        """Make every transaction signed so far unlandable (as a cluster does after ~150 blocks)."""

        await self._run(self._expire_sync)

    def _expire_sync(self) -> None:
        self.svm.expire_blockhash()
        self._height += _BLOCKHASH_WINDOW + 1
