"""GetVenueBalance and RequestPayout.

A payout is taken from the venue's payable balance in the same transaction that checks it, under
the venue's row lock (so two concurrent payouts cannot both spend the same money), and posted to
the ledger before Stripe is called; Stripe's answer is settled (`settlement`), and a payout
Stripe refuses gets an exact reversal that gives the money back. The payout's id derives from
(caller, idempotency key), so a retried request resumes the same payout and sends Stripe the
same Idempotency-Key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from meshkit.db import Database
from payment_service.adapters.stripe_gateway import StripeGateway, StripeRejected
from payment_service.domain import ids, ledger
from payment_service.domain import payouts as rules
from payment_service.domain.balances import VenueBalance, venue_balance
from payment_service.domain.errors import InvalidInput, VenueNotFound, Violation
from payment_service.domain.model import NewPayout, Payout
from payment_service.domain.provider import PayoutResult
from payment_service.domain.settlement import Cause
from payment_service.domain.states import CauseKind, PayoutStatus
from payment_service.store import ledger as ledger_store
from payment_service.store import payouts, venues
from payment_service.usecases.settlement import Settlement

REQUEST_PAYOUT = Cause(CauseKind.RPC, "RequestPayout")


@dataclass(frozen=True, slots=True)
class PayoutRules:
    """This deployment's balance and payout settings."""

    supported_currencies: Sequence[str]
    chargeback_reserve_bps: int
    payout_min_minor: int
    payout_daily_limit_minor: int
    instant_payout_fee_bps: int


@dataclass(frozen=True, slots=True)
class Balance:
    """A venue's balances in one currency, and what it may still be paid out today."""

    venue_id: str
    currency: str
    balance: VenueBalance
    payout_remaining_today: int
    as_of: datetime


@dataclass(frozen=True, slots=True)
class RequestPayout:
    idempotency_key: str
    venue_id: str
    currency: str
    amount: int
    instant: bool
    statement_descriptor: str


class Payouts:
    """Balances and payouts (build once at start)."""

    def __init__(
        self, *, db: Database, gateway: StripeGateway, settlement: Settlement, rules: PayoutRules
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.settlement = settlement
        self.rules = rules

    def _check_currency(self, currency: str, field: str) -> None:
        supported = self.rules.supported_currencies
        if currency not in supported:
            raise InvalidInput([Violation(field, f"unsupported; one of {', '.join(supported)}")])

    async def _venue_balance(
        self, conn: asyncpg.Connection, venue_id: str, currency: str
    ) -> VenueBalance:
        sums = await ledger_store.venue_ledger(conn, venue_id, currency)
        return venue_balance(
            pending=sums.pending,
            available=sums.available,
            disputed=sums.disputed,
            chargeback_reserve_bps=self.rules.chargeback_reserve_bps,
        )

    async def _balance(self, conn: asyncpg.Connection, venue_id: str, currency: str) -> Balance:
        today = await payouts.paid_out_today(conn, venue_id, currency)
        return Balance(
            venue_id=venue_id,
            currency=currency,
            balance=await self._venue_balance(conn, venue_id, currency),
            payout_remaining_today=rules.remaining_today(
                today, self.rules.payout_daily_limit_minor
            ),
            as_of=datetime.now(UTC),
        )

    async def balance(self, venue_id: str, currency: str) -> Balance:
        self._check_currency(currency, "currency")
        async with self.db.acquire() as conn:
            return await self._balance(conn, venue_id, currency)

    async def request_payout(self, request: RequestPayout, *, actor: str) -> tuple[Payout, Balance]:
        self._check_currency(request.currency, "amount.currency")
        rules.check_amount(request.amount, self.rules.payout_min_minor)
        payout_id = ids.payout_id(actor, request.idempotency_key)
        async with self.db.transaction() as conn:
            payout = await payouts.get(conn, payout_id)
            if payout is None:
                if await venues.get(conn, request.venue_id, for_update=True) is None:
                    raise VenueNotFound(f"venue {request.venue_id} is not configured")
                balance = await self._venue_balance(conn, request.venue_id, request.currency)
                rules.check_limits(
                    request.amount,
                    payable=balance.payable,
                    paid_today=await payouts.paid_out_today(
                        conn, request.venue_id, request.currency
                    ),
                    daily_limit=self.rules.payout_daily_limit_minor,
                )
                new = NewPayout(
                    id=payout_id,
                    venue_id=request.venue_id,
                    currency=request.currency,
                    amount=request.amount,
                    fee=rules.fee(
                        request.amount, request.instant, self.rules.instant_payout_fee_bps
                    ),
                    instant=request.instant,
                    statement_descriptor=request.statement_descriptor,
                    created_by=actor,
                )
                payout = await payouts.insert(conn, new) or await payouts.get(conn, payout_id)
                await ledger_store.post(
                    conn,
                    ledger.payout_posting(
                        object_id=rules.object_id(payout_id),
                        currency=new.currency,
                        venue_id=new.venue_id,
                        amount=new.amount,
                        fee=new.fee,
                        available_at=datetime.now(UTC),
                    ),
                    cause=str(REQUEST_PAYOUT),
                    venue_id=new.venue_id,
                )
        assert payout is not None
        if payout.status is PayoutStatus.PENDING and not payout.provider_payout_id:
            payout = await self._send(payout)
        async with self.db.acquire() as conn:
            balance_after = await self._balance(conn, payout.venue_id, payout.currency)
        return payout, balance_after

    async def _send(self, payout: Payout) -> Payout:
        try:
            result = await self.gateway.create_payout(
                idempotency_key=ids.payout_key(payout.id),
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
        return await self.settlement.settle_payout(payout.id, result, REQUEST_PAYOUT)
