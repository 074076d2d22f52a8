"""Venue balances and payouts.

A payout is taken from the venue's payable balance in the same transaction that checks it, under
the venue's row lock (so two concurrent payouts cannot both spend the same money), and posted to
the ledger before Stripe is called; if Stripe refuses the payout, an exact reversal gives the
money back. The payout's id derives from (caller, idempotency key), so a retried request resumes
the same payout and sends Stripe the same Idempotency-Key.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from meshkit.db import Database
from meshkit.errors import FailedPrecondition, FieldViolation, NotFound, PermissionDenied
from meshkit.outbox import publish
from payment_service import access, convert, store
from payment_service.adapters.stripe_gateway import PayoutResult, StripeGateway, StripeRejected
from payment_service.core import TOPIC_PAYOUT_CREATED
from payment_service.domain import ledger
from payment_service.domain.balances import VenueBalance, venue_balance
from payment_service.domain.money import apply_bps
from payment_service.domain.states import PayoutStatus, from_stripe_payout
from payment_service.settings import PaymentSettings
from payment_service.store import PayoutRecord
from tickettoken.payment.v1 import payment_pb2


class Payouts:
    """Balances and payouts; build once at start."""

    def __init__(self, *, db: Database, gateway: StripeGateway, settings: PaymentSettings) -> None:
        self.db = db
        self.gateway = gateway
        self.settings = settings

    async def balance(self, conn: asyncpg.Connection, venue_id: str, currency: str) -> VenueBalance:
        sums = await store.venue_ledger(conn, venue_id, currency)
        return venue_balance(
            pending=sums.pending,
            available=sums.available,
            disputed=sums.disputed,
            chargeback_reserve_bps=self.settings.chargeback_reserve_bps,
        )

    async def balance_proto(
        self, conn: asyncpg.Connection, venue_id: str, currency: str
    ) -> payment_pb2.VenueBalance:
        b = await self.balance(conn, venue_id, currency)
        today = await store.paid_out_today(conn, venue_id, currency)
        remaining = max(0, self.settings.payout_daily_limit_minor - today)
        c = currency
        return payment_pb2.VenueBalance(
            venue_id=venue_id,
            currency=c,
            pending=convert.money(c, b.pending),
            available=convert.money(c, b.available),
            reserved=convert.money(c, b.reserved),
            payable=convert.money(c, b.payable),
            payout_remaining_today=convert.money(c, remaining),
            as_of=convert.ts(datetime.now(UTC)),
        )

    def _check_venue(self, venue_id: str, currency: str) -> None:
        violations: list[FieldViolation] = []
        convert.check_id(venue_id, "venue_id", violations)
        convert.check_currency(currency, "currency", self.settings.supported_currencies, violations)
        convert.raise_if(violations)
        if not access.manages_venue(access.principal(), venue_id):
            raise PermissionDenied(
                f"the caller does not manage venue {venue_id}", reason="VENUE_NOT_MANAGED"
            )

    async def get_balance(
        self, request: payment_pb2.GetVenueBalanceRequest
    ) -> payment_pb2.GetVenueBalanceResponse:
        self._check_venue(request.venue_id, request.currency)
        async with self.db.acquire() as conn:
            balance = await self.balance_proto(conn, request.venue_id, request.currency)
        return payment_pb2.GetVenueBalanceResponse(balance=balance)

    async def request_payout(
        self, request: payment_pb2.RequestPayoutRequest
    ) -> payment_pb2.RequestPayoutResponse:
        currency = request.amount.currency
        self._check_venue(request.venue_id, currency)
        amount = request.amount.amount_minor
        violations: list[FieldViolation] = []
        if amount < self.settings.payout_min_minor:
            violations.append(
                FieldViolation("amount.amount_minor", f"at least {self.settings.payout_min_minor}")
            )
        if len(request.statement_descriptor) > 22:
            violations.append(FieldViolation("statement_descriptor", "at most 22 characters"))
        convert.raise_if(violations)
        p = access.principal()
        payout_id = convert.derive_id("payout", p.subject, request.idempotency_key)
        fee = apply_bps(amount, self.settings.instant_payout_fee_bps) if request.instant else 0
        async with self.db.transaction() as conn:
            payout = await store.get_payout(conn, payout_id)
            if payout is None:
                if await store.get_venue(conn, request.venue_id, for_update=True) is None:
                    raise NotFound(
                        f"venue {request.venue_id} is not configured", reason="VENUE_NOT_FOUND"
                    )
                balance = await self.balance(conn, request.venue_id, currency)
                if amount > balance.payable:
                    raise FailedPrecondition(
                        f"payout of {amount} exceeds the payable {balance.payable}",
                        reason="INSUFFICIENT_PAYABLE",
                        metadata={"payable": str(balance.payable)},
                    )
                today = await store.paid_out_today(conn, request.venue_id, currency)
                if today + amount > self.settings.payout_daily_limit_minor:
                    raise FailedPrecondition(
                        "the daily payout limit would be exceeded",
                        reason="DAILY_PAYOUT_LIMIT",
                        metadata={
                            "remaining": str(max(0, self.settings.payout_daily_limit_minor - today))
                        },
                    )
                await store.insert_payout(
                    conn,
                    {
                        "id": payout_id,
                        "venue_id": request.venue_id,
                        "currency": currency,
                        "status": PayoutStatus.PENDING.name,
                        "amount": amount,
                        "fee": fee,
                        "net_amount": amount - fee,
                        "instant": request.instant,
                        "statement_descriptor": request.statement_descriptor,
                        "created_by": p.subject,
                    },
                )
                await store.post(
                    conn,
                    ledger.payout_posting(
                        object_id=_object_id(payout_id),
                        currency=currency,
                        venue_id=request.venue_id,
                        amount=amount,
                        fee=fee,
                        available_at=datetime.now(UTC),
                    ),
                    cause="rpc:RequestPayout",
                    venue_id=request.venue_id,
                )
                payout = await store.get_payout(conn, payout_id)
        assert payout is not None
        if payout.state is PayoutStatus.PENDING and not payout.provider_payout_id:
            payout = await self._send(payout)
        async with self.db.acquire() as conn:
            balance_proto = await self.balance_proto(conn, payout.venue_id, payout.currency)
        return payment_pb2.RequestPayoutResponse(
            payout=convert.payout_to_proto(payout), balance=balance_proto
        )

    async def _send(self, payout: PayoutRecord) -> PayoutRecord:
        try:
            result = await self.gateway.create_payout(
                idempotency_key=f"tt-payout-{payout.id}",
                amount=payout.net_amount,
                currency=payout.currency,
                instant=payout.instant,
                statement_descriptor=payout.statement_descriptor,
                metadata={"payout_id": str(payout.id), "venue_id": payout.venue_id},
            )
        except StripeRejected as exc:
            result = PayoutResult(
                payout_id="", status="failed", failure_code=exc.code, failure_message=exc.message
            )
        async with self.db.transaction() as conn:
            locked = await store.get_payout(conn, payout.id, for_update=True)
            assert locked is not None
            return await self.apply(conn, locked, result, cause="rpc:RequestPayout")

    async def apply(
        self, conn: asyncpg.Connection, payout: PayoutRecord, result: PayoutResult, *, cause: str
    ) -> PayoutRecord:
        """Apply the provider's view of a (row-locked) payout: ids, status, and a reversal if it
        failed. Used by RequestPayout and by payout webhooks."""
        new = from_stripe_payout(result.status)
        changes: dict[str, object] = {}
        if result.payout_id and not payout.provider_payout_id:
            changes["provider_payout_id"] = result.payout_id
        if result.arrival_date:
            changes["expected_arrival_at"] = datetime.fromtimestamp(result.arrival_date, UTC)
        terminal = (PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.CANCELLED)
        first_answer = not payout.provider_payout_id and result.payout_id
        if payout.state not in terminal and new is not payout.state:
            changes["status"] = new.name
        if new in (PayoutStatus.FAILED, PayoutStatus.CANCELLED) and payout.state not in terminal:
            changes["failure_code"] = result.failure_code or None
            changes["failure_message"] = result.failure_message or None
            await store.post_reversal(
                conn,
                _object_id(payout.id),
                ledger.EntryKind.PAYOUT,
                ledger.EntryKind.PAYOUT_REVERSAL,
                cause=cause,
            )
        if changes:
            payout = await store.update_payout(conn, payout.id, **changes)
        if first_answer:
            await publish(
                conn,
                TOPIC_PAYOUT_CREATED,
                convert.payout_to_proto(payout),
                key=payout.venue_id,
                event_id=convert.derive_id(str(payout.id), TOPIC_PAYOUT_CREATED),
            )
        return payout


def _object_id(payout_id: uuid.UUID) -> str:
    return f"payout:{payout_id}"
