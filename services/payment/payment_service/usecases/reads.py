"""Reads several use cases share: a payment with its refunds, a venue's jurisdiction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from meshkit.db import Database
from payment_service.domain.errors import VenueNotConfigured
from payment_service.domain.fees import Jurisdiction
from payment_service.domain.model import Payment, Refund
from payment_service.store import payments, refunds, venues


@dataclass(frozen=True, slots=True)
class PaymentView:
    payment: Payment
    refunds: Sequence[Refund] = ()


async def load(db: Database, payment_id: uuid.UUID) -> PaymentView | None:
    """A payment and its refunds as committed (None: no such payment)."""
    async with db.acquire() as conn:
        payment = await payments.get(conn, payment_id)
        if payment is None:
            return None
        found = await refunds.of_payments(conn, [payment_id])
    return PaymentView(payment, found[payment_id])


async def venue_jurisdiction(conn: asyncpg.Connection, venue_id: str) -> Jurisdiction:
    """The venue's configured jurisdiction; a venue without one cannot sell."""
    jurisdiction = await venues.get(conn, venue_id)
    if jurisdiction is None:
        raise VenueNotConfigured(
            f"venue {venue_id} has no tax jurisdiction configured", {"venue_id": venue_id}
        )
    return jurisdiction
