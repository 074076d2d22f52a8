"""RecordTransaction: payment's relay announces a sale (PaymentSucceeded) or a refund
(PaymentRefunded) of a venue.

The transaction goes to the mirror as a PAYMENT (id = the payment id) or REFUND (id = the
refund id) record in the `domain.mappings` shape, and its buyer as a CUSTOMER only when they
agreed to marketing and gave an address (id = the buyer's user id, else their lower-cased
address). Then, as after an ingest (`SyncCases.push_changes`), an incremental PUSH is queued
(or the active one answered) on every CONNECTED connection of the venue whose provider takes one
of those entity types (QuickBooks receipts and customers, Mailchimp members, Square
customers). Called with the relay's key (@idempotent): the same event is recorded once; the
mirror skips unchanged records in any case.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from integration_service.domain.mappings import split_name
from integration_service.domain.model import EntityType
from integration_service.store import sync as sync_store
from integration_service.usecases.sync import SyncCases
from meshkit.db import Database


@dataclass(frozen=True, slots=True)
class Money:
    amount_minor: int
    currency: str

    def record(self) -> dict[str, Any]:
        return {"amount_minor": self.amount_minor, "currency": self.currency}


@dataclass(frozen=True, slots=True)
class Line:
    ticket_type_id: str
    description: str
    unit_price: Money
    quantity: int


@dataclass(frozen=True, slots=True)
class Transaction:
    refund: bool
    payment_id: str
    refund_id: str
    venue_id: str
    event_id: str
    order_id: str
    buyer_id: str
    buyer_name: str
    buyer_email: str
    buyer_phone: str
    marketing_consent: bool
    lines: tuple[Line, ...]
    amount: Money
    fees: Money | None
    occurred_at: datetime
    provider_reference: str

    @property
    def entity(self) -> EntityType:
        return EntityType.REFUND if self.refund else EntityType.PAYMENT

    @property
    def internal_id(self) -> str:
        return self.refund_id if self.refund else self.payment_id

    @property
    def customer_id(self) -> str:
        return self.buyer_id or (
            "email:" + self.buyer_email.strip().lower() if self.buyer_email else ""
        )


@dataclass(frozen=True, slots=True)
class Recorded:
    transaction_id: str
    job_ids: tuple[uuid.UUID, ...]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def transaction_record(t: Transaction) -> dict[str, Any]:
    given, family = split_name(t.buyer_name)
    record: dict[str, Any] = {
        "id": t.internal_id,
        "payment_id": t.payment_id,
        "venue_id": t.venue_id,
        "event_id": t.event_id,
        "order_id": t.order_id,
        "occurred_at": _rfc3339(t.occurred_at),
        "amount": t.amount.record(),
        "lines": [
            {
                "ticket_type_id": line.ticket_type_id,
                "description": line.description,
                "quantity": line.quantity,
                "unit_price": line.unit_price.record(),
            }
            for line in t.lines
        ],
        "description": f"Order {t.order_id}" if t.order_id else "",
        "provider_reference": t.provider_reference,
        "customer": {
            "id": t.customer_id,
            "email": t.buyer_email,
            "name": t.buyer_name,
            "given_name": given,
            "family_name": family,
        },
    }
    if t.fees is not None:
        record["fees"] = t.fees.record()
    if t.refund:
        record["reason"] = "refund"
    return record


def customer_record(t: Transaction) -> dict[str, Any] | None:
    """The buyer as a CUSTOMER, only with consent and an address."""
    if not t.marketing_consent or not t.buyer_email:
        return None
    given, family = split_name(t.buyer_name)
    return {
        "id": t.customer_id,
        "email": t.buyer_email.strip().lower(),
        "name": t.buyer_name,
        "given_name": given,
        "family_name": family,
        "phone": t.buyer_phone,
        "marketing_consent": True,
        "venue_id": t.venue_id,
    }


class TransactionCases:
    def __init__(self, *, db: Database, sync: SyncCases) -> None:
        self._db = db
        self._sync = sync

    async def record(self, t: Transaction) -> Recorded:
        records: dict[EntityType, tuple[str, Mapping[str, Any]]] = {
            t.entity: (t.internal_id, transaction_record(t))
        }
        customer = customer_record(t)
        if customer is not None:
            records[EntityType.CUSTOMER] = (str(customer["id"]), customer)
        async with self._db.transaction() as conn:
            for entity, (internal_id, data) in records.items():
                await sync_store.lock_mirror(conn, t.venue_id, entity.value)
                await sync_store.upsert_mirror(
                    conn, t.venue_id, entity.value, [(internal_id, data)]
                )
        jobs = await self._sync.push_changes(t.venue_id, list(records))
        return Recorded(t.internal_id, jobs)
