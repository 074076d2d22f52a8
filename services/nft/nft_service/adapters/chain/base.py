"""The chain interface the service codes against, and the errors it raises.

Two implementations: `LocalChain` (LiteSVM in-process, dev/test) and `RpcChain` (any Solana
JSON-RPC endpoint through the `solana` AsyncClient). Both turn every failure into a `ChainError`
whose `kind` is one of the domain's `ErrorKind`s (domain/retry.py), so the minter's retry
decisions do not depend on which chain answered.

Rent exemption is linear in an account's size (the runtime charges (128 + size) bytes at one
rate); each chain reads the line from the cluster (`rent()`: two rent-exempt minimums, kept once
read), so costs are never hard-coded. A chain whose rent cannot be read is not ready: `rent()`
raises, and nothing is minted or estimated until it can be read.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)

from nft_service.domain.retry import ErrorKind

__all__ = [
    "Accounts",
    "Balance",
    "Chain",
    "ChainError",
    "ErrorKind",
    "RecentBlockhash",
    "Rent",
    "RentReader",
    "TxOutcome",
    "TxStatus",
    "classify_transaction_error",
]

logger = logging.getLogger(__name__)


class ChainError(Exception):
    """A classified chain failure; `retry_after` carries a server's Retry-After hint."""

    def __init__(self, kind: ErrorKind, message: str, *, retry_after: float | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


def classify_transaction_error(err: object, funding_instructions: frozenset[int]) -> ChainError:
    """Map a solders TransactionError (from LiteSVM, a preflight or a status) to a ChainError.

    `funding_instructions` are the indices of instructions that move the payer's lamports
    (system create, ATA create): a System error 1 there means the payer is short of funds and
    a System error 0 on the create means the address is already taken.
    """
    text = str(err)
    if isinstance(err, TransactionErrorFieldless):
        if err == TransactionErrorFieldless.BlockhashNotFound:
            return ChainError(ErrorKind.BLOCKHASH_EXPIRED, "blockhash not found")
        if err == TransactionErrorFieldless.AlreadyProcessed:
            return ChainError(ErrorKind.ALREADY_PROCESSED, "transaction already processed")
        if err in (
            TransactionErrorFieldless.InsufficientFundsForFee,
            TransactionErrorFieldless.AccountNotFound,
        ):
            return ChainError(ErrorKind.INSUFFICIENT_FUNDS, f"payer cannot pay the fee ({text})")
        return ChainError(ErrorKind.PROGRAM_ERROR, text)
    if isinstance(err, TransactionErrorInsufficientFundsForRent):
        return ChainError(ErrorKind.INSUFFICIENT_FUNDS, "insufficient funds for rent")
    if isinstance(err, TransactionErrorInstructionError):
        index, inner = err.index, err.err
        if isinstance(inner, InstructionErrorCustom) and index in funding_instructions:
            if inner.code == 1:
                return ChainError(
                    ErrorKind.INSUFFICIENT_FUNDS, f"instruction {index}: insufficient lamports"
                )
            if inner.code == 0:
                return ChainError(
                    ErrorKind.ACCOUNT_IN_USE, f"instruction {index}: account already in use"
                )
        if inner == InstructionErrorFieldless.InsufficientFunds:
            return ChainError(ErrorKind.INSUFFICIENT_FUNDS, f"instruction {index}: {inner}")
        return ChainError(ErrorKind.PROGRAM_ERROR, f"instruction {index}: {inner}")
    return ChainError(ErrorKind.PROGRAM_ERROR, text)


@dataclass(frozen=True, slots=True)
class Rent:
    """Lamports that make an account of `size` bytes rent-exempt: `base + per_byte * size`."""

    base: int
    per_byte: int

    def exempt(self, size: int) -> int:
        return self.base + self.per_byte * size

    @classmethod
    async def read(cls, minimum: Callable[[int], Awaitable[int]]) -> Rent:
        """Two reads give the whole line. Raises ChainError when the chain cannot be read."""
        zero = await minimum(0)
        one = await minimum(1)
        return cls(base=zero, per_byte=one - zero)


class RentReader:
    """The chain's rent line, read on first use and kept (the cluster's rent does not change
    while a process runs); a failed read raises and is tried again at the next use."""

    def __init__(self, minimum: Callable[[int], Awaitable[int]]) -> None:
        self._minimum = minimum
        self._rent: Rent | None = None

    async def get(self) -> Rent:
        if self._rent is None:
            self._rent = await Rent.read(self._minimum)
        return self._rent

    async def try_read(self) -> None:
        """Read it now if the chain answers (at start); log and go on if not."""
        try:
            await self.get()
        except ChainError as exc:
            logger.warning(
                "cannot read rent from the chain yet; minting waits until it can",
                extra={"error": str(exc)},
            )


@dataclass(frozen=True, slots=True)
class RecentBlockhash:
    """A blockhash and the last block height at which transactions using it can land."""

    blockhash: Hash
    last_valid_block_height: int


class TxStatus(enum.Enum):
    LANDED = "landed"  # executed successfully at the configured commitment
    FAILED = "failed"  # rejected or executed with an error (see error.kind)
    UNKNOWN = "unknown"  # no answer in time: it may still land; check the chain before resending


@dataclass(frozen=True, slots=True)
class TxOutcome:
    status: TxStatus
    signature: Signature
    slot: int = 0
    error: ChainError | None = None


@dataclass(frozen=True, slots=True)
class Accounts:
    """Accounts read together, and the slot they were read at."""

    slot: int
    accounts: list[Account | None]


@dataclass(frozen=True, slots=True)
class Balance:
    slot: int
    lamports: int


class Chain(Protocol):
    """What the service needs from a Solana cluster."""

    @property
    def cluster(self) -> str: ...

    async def rent(self) -> Rent:
        """The cluster's rent line (read once, then kept). Raises ChainError while it cannot be
        read: the chain is not ready."""
        ...

    async def start(self) -> None:
        """Connect (or create the local chain) and try to read the rent line."""
        ...

    async def close(self) -> None: ...

    async def latest_blockhash(self) -> RecentBlockhash: ...

    async def submit(
        self,
        tx: Transaction,
        blockhash: RecentBlockhash,
        funding_instructions: frozenset[int] = frozenset(),
    ) -> TxOutcome:
        """Send, then wait until it landed, failed, its blockhash expired or time ran out.

        Failures are outcomes (FAILED with a classified error; an expired blockhash is FAILED
        with kind blockhash_expired); only "could not even ask" raises ChainError.
        """
        ...

    async def submit_many(
        self,
        items: Sequence[tuple[Transaction, frozenset[int]]],
        blockhash: RecentBlockhash,
    ) -> list[TxOutcome]:
        """`submit` for several (transaction, funding instructions) signed with one blockhash,
        confirmed together; outcomes in the same order."""
        ...

    async def landed(self, signatures: Sequence[Signature]) -> Signature | None:
        """The one of `signatures` that executed successfully, if the chain still knows."""
        ...

    async def get_accounts(self, keys: Sequence[Pubkey]) -> Accounts: ...

    async def get_balance(self, key: Pubkey) -> Balance: ...

    async def rent_exempt_minimum(self, size: int) -> int: ...

    async def token_accounts_of_mint(self, mint: Pubkey) -> list[Pubkey]:
        """Token accounts of `mint` with a non-zero balance (largest first)."""
        ...

    async def fund(self, key: Pubkey, lamports: int) -> None:
        """Dev/test only: give `key` lamports (LiteSVM airdrop, or requestAirdrop)."""
        ...
