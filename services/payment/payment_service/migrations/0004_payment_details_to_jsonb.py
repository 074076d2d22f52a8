"""Payments keep their cart, fee breakdown, buyer contact, event details and caller metadata as
JSONB documents instead of a serialized `tickettoken.payment.v1.Payment` in `details`.

Every existing row's `details` bytes are parsed and rewritten into the new columns, in the
shapes `payment_service.store.payments` reads (its module docstring); then `details` is dropped.
A row whose bytes carry no fee breakdown (or one with an unspecified tier) gets `fees` NULL.
This file is self-contained on purpose: an applied migration never changes, so it must not
follow later changes of the service's code.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import asyncpg

from tickettoken.payment.v1 import payment_pb2

_BATCH = 500
_TIERS = {1: "STARTER", 2: "PRO", 3: "ENTERPRISE"}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _lines(p: payment_pb2.Payment) -> list[dict[str, Any]]:
    return [
        {
            "ticket_type_id": item.ticket_type_id,
            "description": item.description,
            "unit_price": item.unit_price.amount_minor,
            "quantity": item.quantity,
            "section": item.section,
            "row": item.row,
            "seat": item.seat,
            "ticket_ids": list(item.ticket_ids),
        }
        for item in p.line_items
    ]


def _fees(p: payment_pb2.Payment, currency: str) -> dict[str, Any] | None:
    f = p.fees
    if not p.HasField("fees") or f.venue_tier not in _TIERS:
        return None
    j = f.tax.jurisdiction
    return {
        "currency": f.total.currency or currency,
        "subtotal": f.subtotal.amount_minor,
        "ticket_count": f.ticket_count,
        "tier": _TIERS[f.venue_tier],
        "platform_fee_bps": f.platform_fee_bps,
        "platform_fee": f.platform_fee.amount_minor,
        "gas_fee_per_ticket": f.gas_fee_per_ticket.amount_minor,
        "gas_fee": f.gas_fee.amount_minor,
        "tax": {
            "jurisdiction": {
                "country_code": j.country_code,
                "region_code": j.region_code,
                "locality": j.locality,
                "postal_code": j.postal_code,
                "entertainment_tax_applies": j.entertainment_tax_applies,
            },
            "state_bps": f.tax.state_tax_bps,
            "local_bps": f.tax.local_tax_bps,
            "special_bps": f.tax.special_tax_bps,
            "state_tax": f.tax.state_tax.amount_minor,
            "local_tax": f.tax.local_tax.amount_minor,
            "special_tax": f.tax.special_tax.amount_minor,
        },
    }


def _contact(p: payment_pb2.Payment) -> dict[str, str]:
    c = p.buyer_contact
    return {
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "wallet_address": c.wallet_address,
        "locale": c.locale,
        "time_zone": c.time_zone,
    }


def _event(p: payment_pb2.Payment) -> dict[str, Any]:
    e = p.event
    starts_at = e.starts_at.ToDatetime(tzinfo=UTC).isoformat() if e.HasField("starts_at") else None
    return {
        "event_name": e.event_name,
        "venue_name": e.venue_name,
        "starts_at": starts_at,
        "image_url": e.image_url,
    }


def converted(currency: str, details: bytes) -> tuple[str, str | None, str, str, str]:
    """The new columns' JSON for one row's `details` bytes."""
    p = payment_pb2.Payment.FromString(details)
    fees = _fees(p, currency)
    return (
        _dumps(_lines(p)),
        None if fees is None else _dumps(fees),
        _dumps(_contact(p)),
        _dumps(_event(p)),
        _dumps(dict(p.metadata)),
    )


async def migrate(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        ALTER TABLE payments
            ADD COLUMN line_items    jsonb,
            ADD COLUMN fees          jsonb,
            ADD COLUMN buyer_contact jsonb,
            ADD COLUMN event_details jsonb,
            ADD COLUMN metadata      jsonb
        """
    )
    update = """
        UPDATE payments SET line_items = $2::jsonb, fees = $3::jsonb, buyer_contact = $4::jsonb,
                            event_details = $5::jsonb, metadata = $6::jsonb
        WHERE id = $1
    """
    batch: list[tuple[object, ...]] = []
    async for row in conn.cursor("SELECT id, currency, details FROM payments ORDER BY id"):
        batch.append((row["id"], *converted(row["currency"], row["details"])))
        if len(batch) >= _BATCH:
            await conn.executemany(update, batch)
            batch.clear()
    if batch:
        await conn.executemany(update, batch)
    await conn.execute(
        """
        ALTER TABLE payments
            ALTER COLUMN line_items SET NOT NULL,
            ALTER COLUMN buyer_contact SET NOT NULL,
            ALTER COLUMN event_details SET NOT NULL,
            ALTER COLUMN metadata SET NOT NULL,
            ADD CONSTRAINT payments_line_items_check CHECK (jsonb_typeof(line_items) = 'array'),
            ADD CONSTRAINT payments_fees_check
                CHECK (fees IS NULL OR jsonb_typeof(fees) = 'object'),
            ADD CONSTRAINT payments_documents_check CHECK (
                jsonb_typeof(buyer_contact) = 'object'
                AND jsonb_typeof(event_details) = 'object'
                AND jsonb_typeof(metadata) = 'object'),
            DROP COLUMN details
        """
    )
