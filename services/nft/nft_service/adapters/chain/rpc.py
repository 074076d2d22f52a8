"""The Solana JSON-RPC chain (devnet, mainnet, any URL) through the `solana` AsyncClient.

`SolanaRpc` is the one class that makes RPC calls; each goes through the kit's guard for
"solana" (`guard.py`) and raises only classified `ChainError`s:

  HTTP 429 (Retry-After honoured) → rate_limited; -32005 node behind / min-context-slot →
  node_behind; 5xx, transport errors, timeouts → unavailable; a preflight failure → the
  transaction error's class (blockhash_expired, already_processed, insufficient_funds, ...).

`RpcChain.submit` sends with preflight, then polls the signature status, re-sending the same
signed bytes every `resend_interval` (a dropped transaction is re-broadcast, never re-signed)
until it landed, failed, its blockhash expired (block height past `last_valid_block_height`,
checked once more after that) or the confirm timeout passed (outcome UNKNOWN: the caller checks
the chain before doing anything else). `confirm_transaction` of solana-py is not used: it reports
success for a transaction that executed with an error.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.account import Account
from solders.pubkey import Pubkey
from solders.rpc.errors import (
    MinContextSlotNotReachedMessage,
    NodeUnhealthyMessage,
    SendTransactionPreflightFailureMessage,
)
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus

from meshkit.errors import MeshError
from meshkit.resilience import ProviderGuard
from nft_service.adapters.chain.base import (
    Accounts,
    Balance,
    ChainError,
    ErrorKind,
    RecentBlockhash,
    Rent,
    RentReader,
    TxOutcome,
    TxStatus,
    classify_transaction_error,
)
from nft_service.adapters.chain.guard import from_guard_error

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ACCOUNTS_PER_CALL = 100
_MAX_SIGNATURES_PER_CALL = 256
_LEVELS = (
    TransactionConfirmationStatus.Processed,
    TransactionConfirmationStatus.Confirmed,
    TransactionConfirmationStatus.Finalized,
)
_WANTED = {"processed": 0, "confirmed": 1, "finalized": 2}


def _retry_after(response: httpx2.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())


def translate(exc: BaseException, funding: frozenset[int] = frozenset()) -> ChainError:
    """One classified error for anything the AsyncClient raised (module docstring)."""
    if isinstance(exc, ChainError):
        return exc
    if isinstance(exc, SolanaRpcException):
        cause = exc.__cause__
        if isinstance(cause, httpx2.HTTPStatusError):
            status = cause.response.status_code
            if status == 429:
                return ChainError(
                    ErrorKind.RATE_LIMITED, "HTTP 429", retry_after=_retry_after(cause.response)
                )
            if status >= 500 or status == 408:
                return ChainError(ErrorKind.UNAVAILABLE, f"HTTP {status}")
            return ChainError(ErrorKind.PROGRAM_ERROR, f"RPC request rejected: HTTP {status}")
        return ChainError(ErrorKind.UNAVAILABLE, f"transport: {type(cause).__name__}")
    if isinstance(exc, RPCException):
        detail = exc.args[0] if exc.args else None
        if isinstance(detail, NodeUnhealthyMessage | MinContextSlotNotReachedMessage):
            return ChainError(ErrorKind.NODE_BEHIND, detail.message)
        if isinstance(detail, SendTransactionPreflightFailureMessage):
            err = detail.data.err
            if err is None:
                return ChainError(ErrorKind.PROGRAM_ERROR, detail.message)
            return classify_transaction_error(err, funding)
        message = getattr(detail, "message", str(detail))
        return ChainError(ErrorKind.UNAVAILABLE, f"RPC error: {message}")
    if isinstance(exc, TimeoutError | httpx2.TransportError | OSError):
        return ChainError(ErrorKind.UNAVAILABLE, f"transport: {type(exc).__name__}")
    return ChainError(ErrorKind.UNAVAILABLE, f"unexpected RPC failure: {type(exc).__name__}")


class SolanaRpc:
    """Every Solana RPC call the service makes, each through the guard."""

    def __init__(self, url: str, *, commitment: str, timeout: float, guard: ProviderGuard) -> None:
        self._client = AsyncClient(url, commitment=Commitment(commitment), timeout=timeout)
        self._guard = guard
        self._opts = TxOpts(
            skip_confirmation=True,
            skip_preflight=False,
            preflight_commitment=Commitment(commitment),
            max_retries=0,  # we re-broadcast ourselves, with the same bytes
        )

    async def close(self) -> None:
        await self._client.close()

    async def _call(
        self,
        operation: str,
        fn: Callable[[], Awaitable[T]],
        *,
        funding: frozenset[int] = frozenset(),
    ) -> T:
        async def attempt() -> T:
            try:
                return await fn()
            except Exception as exc:
                raise translate(exc, funding) from exc

        try:
            # Every call is idempotent: reads, and re-sending the same signed bytes (one
            # signature, so one transaction however often it arrives).
            return await self._guard.call(operation, attempt, idempotent=True)
        except MeshError as exc:
            raise from_guard_error(exc) from exc

    async def latest_blockhash(self) -> RecentBlockhash:
        resp = await self._call("getLatestBlockhash", self._client.get_latest_blockhash)
        return RecentBlockhash(resp.value.blockhash, resp.value.last_valid_block_height)

    async def send(self, raw: bytes, funding: frozenset[int]) -> None:
        await self._call(
            "sendTransaction",
            lambda: self._client.send_raw_transaction(raw, self._opts),
            funding=funding,
        )

    async def statuses(
        self, signatures: Sequence[Signature], *, history: bool = False
    ) -> list[TransactionStatus | None]:
        resp = await self._call(
            "getSignatureStatuses",
            lambda: self._client.get_signature_statuses(list(signatures), history),
        )
        return list(resp.value)

    async def block_height(self) -> int:
        resp = await self._call("getBlockHeight", self._client.get_block_height)
        return int(resp.value)

    async def multiple_accounts(self, keys: Sequence[Pubkey]) -> Accounts:
        slot = 0
        found: list[Account | None] = []
        for start in range(0, len(keys), _MAX_ACCOUNTS_PER_CALL):
            chunk = list(keys[start : start + _MAX_ACCOUNTS_PER_CALL])

            async def read(chunk: list[Pubkey] = chunk) -> Any:
                return await self._client.get_multiple_accounts(chunk)

            resp = await self._call("getMultipleAccounts", read)
            slot = max(slot, resp.context.slot)
            found.extend(resp.value)
        return Accounts(slot, found)

    async def balance(self, key: Pubkey) -> Balance:
        resp = await self._call("getBalance", lambda: self._client.get_balance(key))
        return Balance(resp.context.slot, int(resp.value))

    async def minimum_balance(self, size: int) -> int:
        resp = await self._call(
            "getMinimumBalanceForRentExemption",
            lambda: self._client.get_minimum_balance_for_rent_exemption(size),
        )
        return int(resp.value)

    async def token_largest_accounts(self, mint: Pubkey) -> list[Pubkey]:
        resp = await self._call(
            "getTokenLargestAccounts", lambda: self._client.get_token_largest_accounts(mint)
        )
        return [item.address for item in resp.value if item.amount.amount != "0"]

    async def request_airdrop(self, key: Pubkey, lamports: int) -> Signature:
        resp = await self._call(
            "requestAirdrop", lambda: self._client.request_airdrop(key, lamports)
        )
        signature: Signature = resp.value
        return signature


class RpcChain:
    """`Chain` over a Solana JSON-RPC endpoint (module docstring)."""

    def __init__(
        self,
        rpc: SolanaRpc,
        *,
        cluster: str,
        commitment: str,
        confirm_timeout: float,
        poll_interval: float,
        resend_interval: float,
        send_concurrency: int = 16,
    ) -> None:
        self.rpc = rpc
        self._send_concurrency = max(1, send_concurrency)
        self._cluster = cluster
        self._wanted = _WANTED[commitment]
        self._confirm_timeout = confirm_timeout
        self._poll = poll_interval
        self._resend = resend_interval
        self._rent_cache: dict[int, int] = {}
        self._rent = RentReader(self.rent_exempt_minimum)

    @property
    def cluster(self) -> str:
        return self._cluster

    async def rent(self) -> Rent:
        return await self._rent.get()

    async def start(self) -> None:
        await self._rent.try_read()

    async def close(self) -> None:
        await self.rpc.close()

    async def latest_blockhash(self) -> RecentBlockhash:
        return await self.rpc.latest_blockhash()

    def _settled(self, status: TransactionStatus, signature: Signature) -> TxOutcome | None:
        if status.err is not None:
            return TxOutcome(
                TxStatus.FAILED,
                signature,
                status.slot,
                classify_transaction_error(status.err, frozenset()),
            )
        level = status.confirmation_status
        # None means rooted (finalized); solders' levels are comparable but not hashable.
        rank = 2 if level is None else next(i for i, v in enumerate(_LEVELS) if v == level)
        if rank >= self._wanted:
            return TxOutcome(TxStatus.LANDED, signature, status.slot)
        return None

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
        """Send every transaction, then confirm them together: one getSignatureStatuses call
        per poll for all that are pending (public endpoints allow ~10 requests/s), re-sending
        the pending ones' bytes every `resend_interval` (module docstring)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._confirm_timeout
        raws = [bytes(tx) for tx, _ in items]
        signatures = [tx.signatures[0] for tx, _ in items]
        done: dict[int, TxOutcome] = {}
        gate = asyncio.Semaphore(self._send_concurrency)

        async def send(i: int) -> None:
            async with gate:
                try:
                    await self.rpc.send(raws[i], items[i][1])
                except ChainError as exc:
                    # Retryable: the request may have reached the cluster; only the chain can
                    # tell now. Permanent: the preflight rejected it, so it cannot land.
                    status = TxStatus.UNKNOWN if exc.retryable else TxStatus.FAILED
                    done[i] = TxOutcome(status, signatures[i], error=exc)

        await asyncio.gather(*(send(i) for i in range(len(items))))
        last_sent = loop.time()
        pending = [i for i in range(len(items)) if i not in done]
        while pending:
            await asyncio.sleep(self._poll)
            try:
                await self._settle(pending, signatures, done, history=False)
                pending = [i for i in pending if i not in done]
                if pending and await self.rpc.block_height() > blockhash.last_valid_block_height:
                    # Past its last valid height: a last look (it may have landed at the very
                    # end), then whatever is still unknown has expired for good.
                    await self._settle(pending, signatures, done, history=True)
                    for i in pending:
                        if i not in done:
                            done[i] = TxOutcome(
                                TxStatus.FAILED,
                                signatures[i],
                                error=ChainError(ErrorKind.BLOCKHASH_EXPIRED, "blockhash expired"),
                            )
                    pending = []
                elif pending and loop.time() - last_sent >= self._resend:
                    last_sent = loop.time()
                    await asyncio.gather(
                        *(self._resend_once(raws[i], items[i][1]) for i in pending)
                    )
            except ChainError as exc:
                if not exc.retryable:
                    # Sent and maybe landed: only a later look at the chain can tell.
                    for i in pending:
                        done.setdefault(i, TxOutcome(TxStatus.UNKNOWN, signatures[i], error=exc))
                    break
                logger.info("solana confirmation poll failed", extra={"error": exc.kind.value})
            if pending and loop.time() >= deadline:
                timeout = ChainError(ErrorKind.CONFIRM_TIMEOUT, "not confirmed in time")
                for i in pending:
                    done.setdefault(i, TxOutcome(TxStatus.UNKNOWN, signatures[i], error=timeout))
                break
        return [done[i] for i in range(len(items))]

    async def _settle(
        self,
        pending: Sequence[int],
        signatures: Sequence[Signature],
        done: dict[int, TxOutcome],
        *,
        history: bool,
    ) -> None:
        for start in range(0, len(pending), _MAX_SIGNATURES_PER_CALL):
            chunk = pending[start : start + _MAX_SIGNATURES_PER_CALL]
            statuses = await self.rpc.statuses([signatures[i] for i in chunk], history=history)
            for i, status in zip(chunk, statuses, strict=True):
                if status is not None:
                    outcome = self._settled(status, signatures[i])
                    if outcome is not None:
                        done[i] = outcome

    async def _resend_once(self, raw: bytes, funding: frozenset[int]) -> None:
        try:
            await self.rpc.send(raw, funding)
        except ChainError as exc:
            # Already processed = it landed meanwhile; an expired blockhash shows up in the
            # next poll's block height check; anything else: the status poll decides too.
            logger.info("solana re-broadcast refused", extra={"error": exc.kind.value})

    async def landed(self, signatures: Sequence[Signature]) -> Signature | None:
        if not signatures:
            return None
        statuses = await self.rpc.statuses(signatures, history=True)
        for signature, status in zip(signatures, statuses, strict=True):
            if status is not None and status.err is None:
                return signature
        return None

    async def get_accounts(self, keys: Sequence[Pubkey]) -> Accounts:
        return await self.rpc.multiple_accounts(keys)

    async def get_balance(self, key: Pubkey) -> Balance:
        return await self.rpc.balance(key)

    async def rent_exempt_minimum(self, size: int) -> int:
        cached = self._rent_cache.get(size)
        if cached is None:
            cached = self._rent_cache[size] = await self.rpc.minimum_balance(size)
        return cached

    async def token_accounts_of_mint(self, mint: Pubkey) -> list[Pubkey]:
        return await self.rpc.token_largest_accounts(mint)

    async def fund(self, key: Pubkey, lamports: int) -> None:
        await self.rpc.request_airdrop(key, lamports)
