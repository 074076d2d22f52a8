"""The nft service's use cases: queue mints, read records, transfer, revoke, verify, wallet.

`NftCore` is built once at start (app.py) from the kit's database, the chain the settings chose,
the payer key and the derivation secret, and is shared by the servicer (RPCs), the mint workers
and the metadata HTTP route. It speaks domain types and raises the kit's typed errors; protos
stay in the servicer and `convert.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from solders.account import Account
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from meshkit.db import Database
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    Unavailable,
    invalid_argument,
)
from meshkit.outbox import publish
from nft_service import convert, store
from nft_service.chain import Chain, ChainError, ErrorKind, RecentBlockhash, TxStatus
from nft_service.chain.token import (
    SIGNATURE_FEE,
    TOKEN_2022,
    TOKEN_ACCOUNT_SPACE,
    DecodeError,
    MintAccount,
    TicketMetadata,
    associated_token_address,
    burn_instructions,
    decode_mint,
    decode_token_account,
    freeze_instructions,
    mint_address,
    mint_instructions,
    sign,
    transfer_instructions,
)
from nft_service.domain.metadata import canonical, metadata_json, metadata_uri, onchain_metadata
from nft_service.domain.model import (
    PENDING_STATES,
    MintRequest,
    MintState,
    NftStatus,
    Ownership,
    RevocationMethod,
    TicketSpec,
)
from nft_service.domain.validation import (
    check_id,
    check_note,
    parse_address,
    raise_if,
    validate_mint,
)
from nft_service.keys import Derivation
from nft_service.settings import NftSettings
from tickettoken.nft.v1 import nft_pb2

logger = logging.getLogger(__name__)

Row: TypeAlias = Any  # asyncpg.Record (asyncpg ships no type information)

# Instruction indices that move the payer's lamports, for error classification.
MINT_FUNDING = frozenset({0})
TRANSFER_FUNDING = frozenset({1})

# 3,480 lamports per byte-year, two years to be exempt; 128 bytes of account overhead.
DEFAULT_RENT_PER_BYTE = 6960

TOPIC_MINTED = "nft.minted"
TOPIC_MINT_FAILED = "nft.mint_failed"
TOPIC_TRANSFERRED = "nft.transferred"
TOPIC_REVOKED = "nft.revoked"


class NftMetrics:
    """The service's own metrics, on the kit's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.mints = Counter(
            "nft_mint_outcomes",
            "Mint attempts by outcome (minted, retrying, failed, dead_lettered, recovered).",
            ["outcome"],
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "nft_mint_queue_to_chain_seconds",
            "Time from MintTickets to the mint confirmed on chain.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        )
        self.balance = Gauge(
            "nft_minting_wallet_balance_lamports",
            "Balance of the minting (fee payer) wallet.",
            registry=registry,
        )
        self.low_balance = Gauge(
            "nft_minting_wallet_low",
            "1 when the minting wallet is below its low-balance threshold.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "nft_mint_queue_depth", "Tickets waiting to be minted.", registry=registry
        )


@dataclass(frozen=True, slots=True)
class ChainView:
    """A ticket as the chain sees it right now."""

    exists: bool
    supply: int
    decimals: int
    has_mint_authority: bool
    holder_wallet: str
    holder_account: Pubkey | None
    frozen: bool
    uri: str
    slot: int
    checked_at: datetime

    @property
    def revoked(self) -> bool:
        return self.exists and (self.supply == 0 or self.frozen)


@dataclass(frozen=True, slots=True)
class WalletInfo:
    address: str
    balance: int
    threshold: int
    lamports_per_mint: int
    cluster: str
    slot: int
    checked_at: datetime

    @property
    def low(self) -> bool:
        return self.balance < self.threshold


@dataclass(frozen=True, slots=True)
class OwnershipAnswer:
    status: Ownership
    ticket_id: str
    mint_address: str
    holder_wallet: str
    slot: int
    checked_at: datetime


@dataclass(frozen=True, slots=True)
class BuiltMint:
    row: Row
    tx: Transaction
    cost: int


def _now() -> datetime:
    return datetime.now(UTC)


def _tickets_fingerprint(request: MintRequest) -> bytes:
    parts = [
        "\x00".join(
            [
                t.ticket_id,
                t.owner_wallet,
                t.event_name,
                t.venue_name,
                t.event_starts_at.isoformat() if t.event_starts_at else "",
                t.section,
                t.row,
                t.seat,
                t.ticket_type,
                t.image_url,
                repr(sorted(t.attributes.items())),
            ]
        )
        for t in request.tickets
    ]
    head = "\x00".join([request.order_id, request.event_id, request.venue_id, request.buyer_id])
    return hashlib.sha256("\x01".join([head, *parts]).encode()).digest()


class NftCore:
    """See the module docstring."""

    def __init__(
        self,
        *,
        settings: NftSettings,
        db: Database,
        chain: Chain,
        payer: Keypair,
        derivation: Derivation,
        metrics: NftMetrics,
        http_port: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.db = db
        self.chain = chain
        self.payer = payer
        self._payer_key = payer.pubkey()  # derived from the secret on every call: cache it
        self.derivation = derivation
        self.metrics = metrics
        self._http_port = http_port
        self.wake = asyncio.Event()  # set by MintTickets so an idle local worker starts at once
        self._rent_base = 0
        self._rent_per_byte = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.chain.start()
        try:
            zero = await self.chain.rent_exempt_minimum(0)
            one = await self.chain.rent_exempt_minimum(1)
            # Rent exemption is linear in the size; two reads give the whole line.
            self._rent_per_byte, self._rent_base = one - zero, zero
        except ChainError as exc:
            # Start anyway (mints retry while the RPC is down); the cluster-wide rent has been
            # these numbers since genesis.
            logger.warning(
                "cannot read rent from the chain; using defaults", extra={"error": str(exc)}
            )
            self._rent_per_byte, self._rent_base = (
                DEFAULT_RENT_PER_BYTE,
                128 * DEFAULT_RENT_PER_BYTE,
            )
        if not self.settings.is_production:
            await self._dev_fund()
        logger.info(
            "nft chain ready",
            extra={"cluster": self.chain.cluster, "payer": str(self._payer_key)},
        )

    async def _dev_fund(self) -> None:
        target = self.settings.solana_dev_airdrop_lamports
        try:
            balance = (await self.chain.get_balance(self._payer_key)).lamports
            if balance >= target // 2:
                return
            await self.chain.fund(self._payer_key, target - balance)
        except ChainError as exc:
            logger.warning("dev airdrop failed", extra={"error": str(exc)})

    async def close(self) -> None:
        await self.chain.close()

    def rent(self, size: int) -> int:
        return self._rent_base + self._rent_per_byte * size

    @property
    def payer_key(self) -> Pubkey:
        return self._payer_key

    def base_url(self) -> str:
        if self.settings.nft_metadata_base_url:
            return self.settings.nft_metadata_base_url.rstrip("/")
        host = self.settings.http_host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind address, not a bind
            host = "127.0.0.1"
        return f"http://{host}:{self._http_port()}/metadata"

    # -- MintTickets ----------------------------------------------------------------------------

    async def enqueue(self, request: MintRequest) -> tuple[Row, list[Row]]:
        """Validate, then create the payment's job (or find it and re-queue its failures)."""
        base = self.base_url()
        validate_mint(
            request,
            max_batch=self.settings.nft_max_batch,
            symbol=self.settings.nft_symbol,
            base_url=base,
        )
        job = store.NewJob(
            id=uuid.uuid4(),
            payment_id=request.payment_id,
            order_id=request.order_id,
            event_id=request.event_id,
            venue_id=request.venue_id,
            buyer_id=request.buyer_id,
            priority=request.priority,
            tickets_fingerprint=_tickets_fingerprint(request),
        )
        custodial_wallet = str(self.derivation.custodial_address(request.buyer_id))
        tickets: list[store.NewTicket] = []
        documents: dict[str, bytes] = {}
        for position, spec in enumerate(request.tickets):
            sha, body = canonical(
                metadata_json(spec, symbol=self.settings.nft_symbol, event_id=request.event_id)
            )
            documents[sha] = body
            seed = self.derivation.mint_seed(request.payment_id, spec.ticket_id)
            tickets.append(
                store.NewTicket(
                    ticket_id=spec.ticket_id,
                    position=position,
                    mint_address=str(mint_address(self.payer_key, seed)),
                    mint_seed=seed,
                    owner_wallet=spec.owner_wallet or custodial_wallet,
                    custodial=not spec.owner_wallet,
                    event_name=spec.event_name,
                    venue_name=spec.venue_name,
                    event_starts_at=spec.event_starts_at,
                    section=spec.section,
                    row=spec.row,
                    seat=spec.seat,
                    ticket_type=spec.ticket_type,
                    image_url=spec.image_url,
                    attributes=dict(spec.attributes),
                    metadata_sha=sha,
                    metadata_uri=metadata_uri(base, sha),
                )
            )

        async def write(conn: asyncpg.Connection) -> tuple[Row, bool, list[Row]]:
            row, created = await store.insert_job(
                conn, job, tickets, sorted(documents.items()), str(TOKEN_2022)
            )
            if not created:
                if bytes(row["tickets_fingerprint"]) != job.tickets_fingerprint:
                    raise FailedPrecondition(
                        "this payment already has a mint job with other tickets",
                        reason="PAYMENT_HAS_OTHER_MINT_JOB",
                        metadata={"job_id": str(row["id"])},
                    )
                requeued = await store.requeue_failed(conn, row["id"])
                if requeued:
                    logger.warning(
                        "failed mints re-queued",
                        extra={"job_id": str(row["id"]), "tickets": requeued},
                    )
            # Read in the same transaction: the reply shows the job as queued, before any
            # worker can see it.
            _, rows = await store.job_by(conn, job_id=row["id"], payment_id=None)
            return row, created, rows

        try:
            row, created, rows = await self.db.run_in_tx(write)
        except store.TicketConflict as exc:
            raise FailedPrecondition(
                "tickets already belong to another payment",
                reason="TICKET_OF_OTHER_PAYMENT",
                metadata={"ticket_ids": ",".join(exc.ticket_ids[:20])},
            ) from None
        self.wake.set()
        if created:
            logger.info(
                "mint job queued",
                extra={
                    "job_id": str(row["id"]),
                    "payment_id": request.payment_id,
                    "tickets": len(rows),
                    "priority": request.priority,
                },
            )
        return row, rows

    async def job(self, *, job_id: str = "", payment_id: str = "") -> tuple[Row, list[Row]]:
        if job_id:
            try:
                parsed = uuid.UUID(job_id)
            except ValueError:
                raise invalid_argument([FieldViolation("job_id", "not a job id")]) from None
            job, rows = await store.job_by(self.db, job_id=parsed, payment_id=None)
        elif payment_id:
            job, rows = await store.job_by(self.db, payment_id=payment_id)
        else:
            raise invalid_argument([FieldViolation("lookup", "job_id or payment_id is required")])
        if job is None:
            raise NotFound("no such mint job", reason="MINT_JOB_NOT_FOUND")
        return job, rows

    # -- minting (used by the workers) ------------------------------------------------------------

    def build_mint(self, row: Row, blockhash: RecentBlockhash) -> BuiltMint:
        metadata = onchain_metadata(
            spec_from_row(row), symbol=self.settings.nft_symbol, uri=row["metadata_uri"]
        )
        mint_lamports = self.rent(metadata.mint_account_len())
        ixs = mint_instructions(
            payer=self.payer_key,
            seed=row["mint_seed"],
            holder=Pubkey.from_string(row["owner_wallet"]),
            metadata=metadata,
            mint_lamports=mint_lamports,
        )
        tx = sign(ixs, self.payer, blockhash.blockhash)
        cost = mint_lamports + self.rent(TOKEN_ACCOUNT_SPACE) + SIGNATURE_FEE
        return BuiltMint(row, tx, cost)

    def is_our_mint(self, state: MintAccount) -> bool:
        return (
            state.decimals == 0
            and state.mint_authority is None
            and state.permanent_delegate == self.payer_key
            and state.update_authority == self.payer_key
        )

    async def minted_on_chain(self, rows: Sequence[Row]) -> tuple[dict[str, int], set[str]]:
        """Which of these tickets' mints exist on chain as our completed ticket NFT
        ({ticket_id: slot}), and which addresses are taken by something else."""
        if not rows:
            return {}, set()
        read = await self.chain.get_accounts([Pubkey.from_string(r["mint_address"]) for r in rows])
        minted: dict[str, int] = {}
        squatted: set[str] = set()
        for row, account in zip(rows, read.accounts, strict=True):
            if account is None:
                continue
            try:
                if account.owner != TOKEN_2022:
                    raise DecodeError("not a Token-2022 account")
                state = decode_mint(bytes(account.data))
            except (DecodeError, ValueError, IndexError):
                squatted.add(row["ticket_id"])
                continue
            if self.is_our_mint(state):
                minted[row["ticket_id"]] = read.slot
            else:
                squatted.add(row["ticket_id"])
        return minted, squatted

    async def landed_signature(self, row: Row, sent_now: str = "") -> str:
        """The signature of the send that landed (the latest one if the chain forgot)."""
        texts = [*(row["signatures"] or []), *([sent_now] if sent_now else [])]
        sent = [Signature.from_string(s) for s in dict.fromkeys(texts)]
        try:
            found = await self.chain.landed(sent)
        except ChainError:
            found = None
        if found is not None:
            return str(found)
        return str(sent[-1]) if sent else ""

    async def publish_minted(self, conn: asyncpg.Connection, row: Row) -> None:
        await publish(conn, TOPIC_MINTED, convert.ticket_nft(row), key=row["payment_id"])

    async def publish_mint_failed(self, conn: asyncpg.Connection, row: Row) -> None:
        job, tickets = await store.job_by(conn, job_id=row["job_id"], payment_id=None)
        assert job is not None
        await publish(
            conn,
            TOPIC_MINT_FAILED,
            convert.mint_job(job, tickets, only=[row]),
            key=row["payment_id"],
        )

    # -- reads ------------------------------------------------------------------------------------

    async def ticket(self, *, ticket_id: str = "", mint_address_: str = "") -> Row:
        if ticket_id:
            row = await store.ticket_by(self.db, ticket_id=ticket_id)
        elif mint_address_:
            row = await store.ticket_by(self.db, mint_address=mint_address_)
        else:
            raise invalid_argument(
                [FieldViolation("lookup", "ticket_id or mint_address is required")]
            )
        if row is None:
            raise NotFound("no such ticket NFT", reason="TICKET_NOT_FOUND")
        return row

    async def chain_view(self, row: Row) -> ChainView:
        """Read the mint and the recorded holder's token account (and, if the token is not
        there, find where it is)."""
        mint = Pubkey.from_string(row["mint_address"])
        owner = Pubkey.from_string(row["owner_wallet"])
        ata = associated_token_address(owner, mint)
        read = await self._read([mint, ata])
        mint_account, ata_account = read.accounts
        now = _now()
        state = _mint_state(mint_account)
        if state is None:  # absent, or an account that is not a Token-2022 mint
            return ChainView(False, 0, 0, False, "", None, False, "", read.slot, now)
        holder_wallet, holder_account, frozen = "", None, False
        token = _token(ata_account)
        if token is not None and token.amount > 0:
            holder_wallet, holder_account, frozen = str(owner), ata, token.frozen
        elif state.supply > 0:
            holder_account = await self._find_holder_account(mint)
            if holder_account is not None:
                other = _token((await self._read([holder_account])).accounts[0])
                if other is not None:
                    holder_wallet, frozen = str(other.owner), other.frozen
        return ChainView(
            exists=True,
            supply=state.supply,
            decimals=state.decimals,
            has_mint_authority=state.mint_authority is not None,
            holder_wallet=holder_wallet,
            holder_account=holder_account,
            frozen=frozen,
            uri=state.uri,
            slot=read.slot,
            checked_at=now,
        )

    async def _read(self, keys: Sequence[Pubkey]) -> _Read:
        try:
            accounts = await self.chain.get_accounts(keys)
        except ChainError as exc:
            raise Unavailable("the chain cannot be read right now", retry_after=1.0) from exc
        return _Read(accounts.slot, accounts.accounts)

    async def _find_holder_account(self, mint: Pubkey) -> Pubkey | None:
        try:
            holders = await self.chain.token_accounts_of_mint(mint)
        except ChainError as exc:
            raise Unavailable("the chain cannot be read right now", retry_after=1.0) from exc
        return holders[0] if holders else None

    def matches_record(self, row: Row, view: ChainView) -> bool:
        if row["mint_state"] != "MINTED":
            return not view.exists
        if not view.exists or view.decimals != 0 or view.has_mint_authority:
            return False
        if view.uri != row["metadata_uri"]:
            return False
        if row["status"] == NftStatus.REVOKED:
            return view.revoked
        return view.supply == 1 and not view.frozen and view.holder_wallet == row["owner_wallet"]

    async def list_tickets(
        self, filt: store.ListFilter, *, page_size: int, page_token: str
    ) -> tuple[list[Row], str]:
        violations: list[FieldViolation] = []
        if not (filt.owner_wallet or filt.buyer_id or filt.event_id or filt.payment_id):
            violations.append(
                FieldViolation(
                    "owner_wallet", "one of owner_wallet, buyer_id, event_id, payment_id"
                )
            )
        if page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        after = ""
        if page_token:
            decoded = store.decode_page_token(filt.token_scope(), page_token)
            if decoded is None:
                violations.append(FieldViolation("page_token", "not a token for this query"))
            else:
                after = decoded
        raise_if(violations)
        limit = min(page_size or 50, 500)
        rows = await store.list_tickets(self.db, filt, after, limit + 1)
        if len(rows) > limit:
            rows = rows[:limit]
            return rows, store.encode_page_token(filt.token_scope(), rows[-1]["ticket_id"])
        return rows, ""

    # -- platform moves ---------------------------------------------------------------------

    async def _send(self, ixs_for: Callable[[], list[Instruction]], funding: frozenset[int]) -> str:
        """Sign with a fresh blockhash and submit; re-sign once if the blockhash expired."""
        for _ in range(2):
            try:
                blockhash = await self.chain.latest_blockhash()
                tx = sign(ixs_for(), self.payer, blockhash.blockhash)
                outcome = await self.chain.submit(tx, blockhash, funding)
            except ChainError as exc:
                raise Unavailable("the chain is not reachable", retry_after=1.0) from exc
            if outcome.status is TxStatus.LANDED:
                return str(outcome.signature)
            error = outcome.error
            if outcome.status is TxStatus.UNKNOWN or error is None or error.retryable:
                # It may still land: the client's retry (same key) reads the chain first.
                raise Unavailable(
                    "the transaction was not confirmed; retry", retry_after=2.0
                ) from error
            if error.kind is ErrorKind.BLOCKHASH_EXPIRED:
                continue
            if error.kind is ErrorKind.INSUFFICIENT_FUNDS:
                raise FailedPrecondition(
                    "the minting wallet cannot pay for this transaction",
                    reason="MINTING_WALLET_EMPTY",
                )
            if error.kind is ErrorKind.ALREADY_PROCESSED:
                return str(outcome.signature)
            raise FailedPrecondition(
                f"the chain refused the transaction: {error.message}", reason="CHAIN_REJECTED"
            )
        raise Unavailable("blockhash kept expiring; retry", retry_after=1.0)

    def _destination(
        self, to_wallet: str, to_user_id: str, violations: list[FieldViolation]
    ) -> tuple[Pubkey | None, bool]:
        if to_wallet:
            address = parse_address(to_wallet)
            if address is None:
                violations.append(FieldViolation("to_wallet", "not a base58 Solana address"))
            return address, False
        if not to_user_id:
            violations.append(FieldViolation("to_wallet", "to_wallet or to_user_id is required"))
            return None, False
        check_id(violations, "to_user_id", to_user_id)
        return self.derivation.custodial_address(to_user_id), True

    async def transfer(
        self,
        *,
        ticket_id: str,
        to_wallet: str,
        to_user_id: str,
        reason: int,
        reference_id: str,
        note: str,
    ) -> tuple[Row, str, str]:
        """Move the ticket with the permanent delegate; returns (record, from, signature)."""
        violations: list[FieldViolation] = []
        check_id(violations, "ticket_id", ticket_id)
        destination, custodial = self._destination(to_wallet, to_user_id, violations)
        if reason not in nft_pb2.TransferReason.values() or reason == 0:
            violations.append(FieldViolation("reason", "required"))
        check_note(violations, "note", note)
        if len(reference_id) > 128:
            violations.append(FieldViolation("reference_id", "at most 128 characters"))
        raise_if(violations)
        assert destination is not None
        row = await self.ticket(ticket_id=ticket_id)
        self._require_active(row)
        view = await self.chain_view(row)
        if view.revoked or not view.exists:
            raise FailedPrecondition("the ticket is revoked on chain", reason="TICKET_REVOKED")
        if view.holder_account is None:
            raise FailedPrecondition("nobody holds the ticket on chain", reason="TICKET_NO_HOLDER")
        from_wallet = view.holder_wallet
        signature = ""
        if from_wallet != str(destination):
            source = view.holder_account
            nonce = uuid.uuid4().hex[:12]
            signature = await self._send(
                lambda: transfer_instructions(
                    payer=self.payer_key,
                    mint=Pubkey.from_string(row["mint_address"]),
                    source=source,
                    destination_owner=destination,
                    note=f"tickettoken transfer {ticket_id} {nonce}",
                ),
                TRANSFER_FUNDING,
            )
        elif row["owner_wallet"] != from_wallet:
            # Already there on chain (a retry after a crash): only our record is behind.
            from_wallet = row["owner_wallet"]

        async def record(conn: asyncpg.Connection) -> Row:
            updated = await store.record_transfer(
                conn,
                ticket_id=ticket_id,
                from_wallet=from_wallet,
                to_wallet=str(destination),
                custodial=custodial,
                reason=reason,
                reference_id=reference_id,
                note=note,
                signature=signature,
            )
            await publish(
                conn,
                TOPIC_TRANSFERRED,
                nft_pb2.TransferTicketResponse(
                    nft=convert.ticket_nft(updated), from_wallet=from_wallet, signature=signature
                ),
                key=ticket_id,
            )
            return updated

        updated = await self.db.run_in_tx(record)
        logger.info(
            "ticket transferred",
            extra={"ticket_id": ticket_id, "to": str(destination), "signature": signature},
        )
        return updated, from_wallet, signature

    @staticmethod
    def _require_active(row: Row) -> None:
        if row["status"] == NftStatus.REVOKED:
            raise FailedPrecondition("the ticket is revoked", reason="TICKET_REVOKED")
        if row["mint_state"] in PENDING_STATES:
            # Not final: ABORTED (retry the same request later) releases the idempotency key,
            # where FAILED_PRECONDITION would be stored and replayed for good.
            raise Aborted(
                "the ticket is still being minted; retry",
                reason="TICKET_NOT_MINTED_YET",
                retry_after=5.0,
            )
        if row["mint_state"] != MintState.MINTED:
            raise FailedPrecondition("the ticket was never minted", reason="TICKET_NOT_MINTED")

    async def revoke(
        self,
        *,
        ticket_id: str,
        reason: int,
        note: str,
        method: int,
        reference_id: str,
    ) -> tuple[Row, str]:
        """Burn or freeze the ticket and record why; returns (record, signature)."""
        violations: list[FieldViolation] = []
        check_id(violations, "ticket_id", ticket_id)
        if reason not in nft_pb2.RevokeReason.values() or reason == 0:
            violations.append(FieldViolation("reason", "required"))
        if method not in nft_pb2.RevocationMethod.values():
            violations.append(FieldViolation("method", "unknown method"))
        check_note(violations, "note", note)
        if len(reference_id) > 128:
            violations.append(FieldViolation("reference_id", "at most 128 characters"))
        raise_if(violations)
        row = await self.ticket(ticket_id=ticket_id)
        if row["status"] == NftStatus.REVOKED:
            return row, row["revoke_signature"] or ""
        self._require_active(row)
        chosen = (
            RevocationMethod.FREEZE
            if method == nft_pb2.REVOCATION_METHOD_FREEZE
            else RevocationMethod.BURN
            if method == nft_pb2.REVOCATION_METHOD_BURN
            else RevocationMethod(self.settings.nft_default_revocation)
        )
        method_number = (
            nft_pb2.REVOCATION_METHOD_FREEZE
            if chosen is RevocationMethod.FREEZE
            else nft_pb2.REVOCATION_METHOD_BURN
        )
        view = await self.chain_view(row)
        mint = Pubkey.from_string(row["mint_address"])
        signature = ""
        if not view.revoked and view.exists:
            account = view.holder_account
            if account is None:
                raise FailedPrecondition(
                    "nobody holds the ticket on chain", reason="TICKET_NO_HOLDER"
                )
            builder = burn_instructions if chosen is RevocationMethod.BURN else freeze_instructions
            nonce = uuid.uuid4().hex[:12]
            signature = await self._send(
                lambda: builder(
                    payer=self.payer_key,
                    mint=mint,
                    account=account,
                    note=f"tickettoken revoke {ticket_id} {nonce}",
                ),
                frozenset(),
            )
        holder = view.holder_wallet or row["owner_wallet"]

        async def record(conn: asyncpg.Connection) -> Row:
            updated = await store.record_revoke(
                conn,
                ticket_id=ticket_id,
                holder=holder,
                reason=reason,
                method=method_number,
                reference_id=reference_id,
                note=note,
                signature=signature,
            )
            await publish(
                conn,
                TOPIC_REVOKED,
                nft_pb2.RevokeTicketResponse(nft=convert.ticket_nft(updated), signature=signature),
                key=ticket_id,
            )
            return updated

        updated = await self.db.run_in_tx(record)
        logger.info(
            "ticket revoked",
            extra={"ticket_id": ticket_id, "method": chosen.value, "signature": signature},
        )
        return updated, signature

    async def verify_ownership(
        self, *, ticket_id: str, mint_address_: str, wallet: str
    ) -> OwnershipAnswer:
        violations: list[FieldViolation] = []
        address = parse_address(wallet)
        if address is None:
            violations.append(FieldViolation("wallet", "not a base58 Solana address"))
        if not ticket_id and not mint_address_:
            violations.append(FieldViolation("ticket", "ticket_id or mint_address is required"))
        raise_if(violations)
        assert address is not None
        row = await self.ticket(ticket_id=ticket_id, mint_address_=mint_address_)
        mint = Pubkey.from_string(row["mint_address"])
        read = await self._read([mint, associated_token_address(address, mint)])
        mint_account, wallet_account = read.accounts
        now = _now()

        def answer(status: Ownership, holder: str = "") -> OwnershipAnswer:
            return OwnershipAnswer(
                status, row["ticket_id"], row["mint_address"], holder, read.slot, now
            )

        state = _mint_state(mint_account)
        if state is None:
            return answer(Ownership.NOT_MINTED)
        if state.supply == 0:
            return answer(Ownership.REVOKED)
        token = _token(wallet_account)
        if token is not None and token.amount > 0:
            if token.frozen or row["status"] == NftStatus.REVOKED:
                return answer(Ownership.REVOKED, wallet)
            return answer(Ownership.OWNED, wallet)
        holder_account = await self._find_holder_account(mint)
        holder = ""
        if holder_account is not None:
            other = _token((await self._read([holder_account])).accounts[0])
            if other is not None:
                holder = str(other.owner)
                if other.frozen:
                    return answer(Ownership.REVOKED, holder)
        return answer(Ownership.NOT_OWNER, holder)

    # -- wallet -----------------------------------------------------------------------------------

    async def estimated_cost(self) -> int:
        recorded = await store.average_mint_cost(self.db)
        if recorded is not None:
            return recorded
        typical = TicketMetadata(
            name="x" * 24,
            symbol=self.settings.nft_symbol,
            uri=metadata_uri(self.base_url(), "0" * 64),
            fields=(
                ("event", "x" * 24),
                ("venue", "x" * 16),
                ("date", "2026-01-01T20:00:00Z"),
                ("section", "AA"),
                ("row", "12"),
                ("seat", "7"),
                ("type", "General"),
            ),
        )
        return (
            self.rent(typical.mint_account_len()) + self.rent(TOKEN_ACCOUNT_SPACE) + SIGNATURE_FEE
        )

    async def wallet(self) -> WalletInfo:
        try:
            balance = await self.chain.get_balance(self.payer_key)
        except ChainError as exc:
            raise Unavailable("the chain cannot be read right now", retry_after=1.0) from exc
        info = WalletInfo(
            address=str(self.payer_key),
            balance=balance.lamports,
            threshold=self.settings.nft_low_balance_lamports,
            lamports_per_mint=await self.estimated_cost(),
            cluster=self.chain.cluster,
            slot=balance.slot,
            checked_at=_now(),
        )
        self.metrics.balance.set(info.balance)
        self.metrics.low_balance.set(1 if info.low else 0)
        return info

    async def check_wallet(self) -> None:
        """Periodic: refresh the balance gauge and warn when the wallet runs low."""
        info = await self.wallet()
        self.metrics.queue_depth.set(await store.queue_depth(self.db))
        if info.low:
            logger.warning(
                "minting wallet balance is low",
                extra={
                    "address": info.address,
                    "balance_lamports": info.balance,
                    "threshold_lamports": info.threshold,
                    "estimated_mints_remaining": info.balance // max(1, info.lamports_per_mint),
                },
            )


@dataclass(frozen=True, slots=True)
class _Read:
    slot: int
    accounts: list[Account | None]


def _mint_state(account: Account | None) -> MintAccount | None:
    if account is None or account.owner != TOKEN_2022:
        return None
    try:
        return decode_mint(bytes(account.data))
    except (DecodeError, ValueError, IndexError):
        return None


def _token(account: Account | None) -> _TokenState | None:
    if account is None or account.owner != TOKEN_2022:
        return None
    try:
        state = decode_token_account(bytes(account.data))
    except (DecodeError, ValueError):
        return None
    return _TokenState(state.owner, state.amount, state.frozen)


@dataclass(frozen=True, slots=True)
class _TokenState:
    owner: Pubkey
    amount: int
    frozen: bool


def spec_from_row(row: Row) -> TicketSpec:
    return TicketSpec(
        ticket_id=row["ticket_id"],
        owner_wallet=row["owner_wallet"],
        event_name=row["event_name"],
        venue_name=row["venue_name"],
        event_starts_at=row["event_starts_at"],
        section=row["section"],
        row=row["row"],
        seat=row["seat"],
        ticket_type=row["ticket_type"],
        image_url=row["image_url"],
    )
