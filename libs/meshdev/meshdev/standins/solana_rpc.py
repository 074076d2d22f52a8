"""A Solana JSON-RPC server on 127.0.0.1 backed by LiteSVM, that can be scripted to misbehave.

Tests only (the nft settings refuse any loopback RPC URL in production, and no production module
imports this one). It lets the real `solana` AsyncClient path run offline against the real
Token-2022 programs, and injects the faults a public RPC endpoint produces:

  http429        HTTP 429 with a Retry-After header
  node_behind    JSON-RPC error -32005 "Node is behind"
  http503        HTTP 503 (before doing anything)
  drop           sendTransaction answers with the signature but the transaction is never
                 processed (a dropped transaction: only a re-broadcast lands it)
  lose_response  the transaction is processed (it lands), then the answer is HTTP 503
  hang           the transaction is processed, then the server never answers (a client that
                 "crashes" while waiting has landed a mint it does not know about)
  expire_before  the blockhash expires just before the transaction is processed

`inject(method, fault, times=n)` queues a fault for the next n calls of `method` ("*" = any).
The methods the service uses are implemented with the shapes solana-py's parsers expect. Block
height advances by 151 on every blockhash expiry, so a signed transaction's lastValidBlockHeight
is passed exactly when LiteSVM stops accepting its blockhash.

Like a real node it knows the SPL token account layout, not the nft service's code: it reads
token accounts itself (`_token_amount`) rather than importing the service's decoders.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import logging
import struct
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import (
    InstructionErrorCustom,
    InstructionErrorFieldless,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)

logger = logging.getLogger(__name__)

_WINDOW = 150

TOKEN_2022 = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
_TOKEN_ACCOUNT_LEN = 165  # SPL token account: mint 32, owner 32, amount u64, ..., state at 108


def _token_amount(data: bytes) -> int:
    """The amount of an initialized SPL / Token-2022 token account (its base layout)."""
    if len(data) < _TOKEN_ACCOUNT_LEN or data[108] == 0:
        raise ValueError("not an initialized token account")
    amount: int = struct.unpack_from("<Q", data, 64)[0]
    return amount


def _name(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def tx_error_json(err: object) -> Any:
    """A solders TransactionError in the JSON shape the RPC API uses."""
    if isinstance(err, TransactionErrorFieldless):
        return _name(err)
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        detail: Any
        if isinstance(inner, InstructionErrorCustom):
            detail = {"Custom": inner.code}
        elif isinstance(inner, InstructionErrorFieldless):
            detail = _name(inner)
        else:
            detail = {"BorshIoError": str(inner)}
        return {"InstructionError": [err.index, detail]}
    if isinstance(err, TransactionErrorInsufficientFundsForRent):
        return {"InsufficientFundsForRent": {"account_index": err.account_index}}
    return _name(err)


def _account_json(account: Account | None) -> Any:
    if account is None:
        return None
    return {
        "lamports": account.lamports,
        "data": [base64.b64encode(bytes(account.data)).decode(), "base64"],
        "owner": str(account.owner),
        "executable": account.executable,
        "rentEpoch": account.rent_epoch,
        "space": len(bytes(account.data)),
    }


class _RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class _Status:
    slot: int
    err: Any


class LiteSvmRpcServer:
    """See the module docstring. `async with LiteSvmRpcServer() as server: server.url`."""

    def __init__(self, svm: LiteSVM | None = None) -> None:
        self.svm = svm or LiteSVM()
        self.height = 1_000
        self.slot = 1_000
        self.calls: collections.Counter[str] = collections.Counter()
        self.landed: list[str] = []  # signatures of transactions that executed successfully
        self._faults: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
        self._statuses: dict[str, _Status] = {}
        self._runner: web.AppRunner | None = None
        self._hung: list[asyncio.Future[None]] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, method: str, fault: str, times: int = 1) -> None:
        self._faults[method].extend([fault] * times)

    def clear_faults(self) -> None:
        self._faults.clear()

    def pending_faults(self) -> int:
        return sum(len(q) for q in self._faults.values())

    def expire_blockhash(self) -> None:
        self.svm.expire_blockhash()
        self.height += _WINDOW + 1
        self.slot += _WINDOW + 1

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        for hung in self._hung:
            hung.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LiteSvmRpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- dispatch -------------------------------------------------------------------------------

    def _next_fault(self, method: str) -> str | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                return queue.popleft()
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        method = body.get("method", "")
        self.calls[method] += 1
        fault = self._next_fault(method)
        if fault == "http429":
            return web.Response(status=429, headers={"Retry-After": "0.05"}, text="slow down")
        if fault == "http503":
            return web.Response(status=503, text="unavailable")
        if fault == "node_behind":
            return self._error(body, -32005, "Node is behind by 42 slots", {"numSlotsBehind": 42})
        try:
            result = getattr(self, f"_m_{method}")(body.get("params") or [], fault)
        except AttributeError:
            return self._error(body, -32601, f"Method not found: {method}")
        except _RpcError as err:
            return self._error(body, err.code, err.message, err.data)
        if fault == "lose_response":
            return web.Response(status=503, text="lost")
        if fault == "hang":
            hung: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._hung.append(hung)
            await hung
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "result": result})

    @staticmethod
    def _error(body: Any, code: int, message: str, data: Any = None) -> web.Response:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        return web.json_response({"jsonrpc": "2.0", "id": body.get("id"), "error": error})

    def _context(self, value: Any) -> Any:
        return {"context": {"slot": self.slot}, "value": value}

    # -- methods --------------------------------------------------------------------------------

    def _m_getHealth(self, params: list[Any], fault: str | None) -> Any:
        return "ok"

    def _m_getLatestBlockhash(self, params: list[Any], fault: str | None) -> Any:
        return self._context(
            {
                "blockhash": str(self.svm.latest_blockhash()),
                "lastValidBlockHeight": self.height + _WINDOW,
            }
        )

    def _m_getBlockHeight(self, params: list[Any], fault: str | None) -> Any:
        return self.height

    def _m_getSlot(self, params: list[Any], fault: str | None) -> Any:
        return self.slot

    def _m_getMinimumBalanceForRentExemption(self, params: list[Any], fault: str | None) -> Any:
        return self.svm.minimum_balance_for_rent_exemption(int(params[0]))

    def _m_getBalance(self, params: list[Any], fault: str | None) -> Any:
        return self._context(self.svm.get_balance(Pubkey.from_string(params[0])) or 0)

    def _m_getAccountInfo(self, params: list[Any], fault: str | None) -> Any:
        return self._context(_account_json(self.svm.get_account(Pubkey.from_string(params[0]))))

    def _m_getMultipleAccounts(self, params: list[Any], fault: str | None) -> Any:
        keys = [Pubkey.from_string(k) for k in params[0]]
        return self._context([_account_json(self.svm.get_account(k)) for k in keys])

    def _m_getTokenLargestAccounts(self, params: list[Any], fault: str | None) -> Any:
        mint = bytes(Pubkey.from_string(params[0]))
        found: list[tuple[int, dict[str, Any]]] = []
        for key, account in self.svm.get_program_accounts(TOKEN_2022):
            data = bytes(account.data)
            if len(data) >= 165 and data[:32] == mint and (len(data) == 165 or data[165] == 2):
                amount = _token_amount(data)
                item = {
                    "address": str(key),
                    "amount": str(amount),
                    "decimals": 0,
                    "uiAmount": float(amount),
                    "uiAmountString": str(amount),
                }
                found.append((amount, item))
        found.sort(key=lambda pair: -pair[0])
        return self._context([item for _, item in found[:20]])

    def _m_requestAirdrop(self, params: list[Any], fault: str | None) -> Any:
        self.svm.airdrop(Pubkey.from_string(params[0]), int(params[1]))
        return str(Signature.new_unique())

    def _m_getSignatureStatuses(self, params: list[Any], fault: str | None) -> Any:
        values: list[dict[str, Any] | None] = []
        for text in params[0]:
            status = self._statuses.get(text)
            if status is None:
                values.append(None)
                continue
            values.append(
                {
                    "slot": status.slot,
                    "confirmations": None,
                    "err": status.err,
                    "status": {"Ok": None} if status.err is None else {"Err": status.err},
                    "confirmationStatus": "finalized",
                }
            )
        return self._context(values)

    def _m_sendTransaction(self, params: list[Any], fault: str | None) -> Any:
        config = params[1] if len(params) > 1 else {}
        tx = Transaction.from_bytes(base64.b64decode(params[0]))
        signature = str(tx.signatures[0])
        if fault == "drop":
            return signature
        if fault == "expire_before":
            self.expire_blockhash()
        result = self.svm.send_transaction(tx)
        self.slot += 1
        if isinstance(result, FailedTransactionMetadata):
            err = tx_error_json(result.err())
            already = err == "AlreadyProcessed"
            if not already and err != "BlockhashNotFound":
                self._statuses[signature] = _Status(self.slot, err)
            if config.get("skipPreflight"):
                return signature
            raise _RpcError(
                -32002,
                f"Transaction simulation failed: {err}",
                {
                    "err": err,
                    "logs": [],
                    "accounts": None,
                    "unitsConsumed": 0,
                    "returnData": None,
                },
            )
        self._statuses[signature] = _Status(self.slot, None)
        self.landed.append(signature)
        return signature
