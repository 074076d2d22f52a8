"""Payments and their transitions.

The cart, fee breakdown, buyer contact, event details and caller metadata are JSONB documents in
the shapes below (written once, at creation); everything that changes is a column. A status
changes only through `transition`, a conditional UPDATE that admits the state machine's sources
and records the transition with its cause in the same statement.

    line_items     [{"ticket_type_id", "description", "unit_price", "quantity", "section",
                     "row", "seat", "ticket_ids": [...]}]          unit_price in minor units
    fees           {"currency", "subtotal", "ticket_count", "tier", "platform_fee_bps",
                    "platform_fee", "gas_fee_per_ticket", "gas_fee",
                    "tax": {"jurisdiction": {"country_code", "region_code", "locality",
                                             "postal_code", "entertainment_tax_applies"},
                            "state_bps", "local_bps", "special_bps",
                            "state_tax", "local_tax", "special_tax"}}       or NULL
    buyer_contact  {"name", "email", "phone", "wallet_address", "locale", "time_zone"}
    event_details  {"event_name", "venue_name", "starts_at" (ISO 8601 or null), "image_url"}
    metadata       {"key": "value", ...}
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from payment_service.domain.errors import OrderHasLivePayment
from payment_service.domain.fees import FeeQuote, Jurisdiction, TaxQuote, TaxRates, VenueTier
from payment_service.domain.model import (
    Contact,
    EventDetails,
    LineItem,
    NewPayment,
    Payment,
    PaymentFilter,
)
from payment_service.domain.settlement import Cause, Changes
from payment_service.domain.states import OPEN_STATES, PaymentStatus, allowed_from
from payment_service.store._sql import assignments, lock

UPDATABLE = frozenset(
    {
        "provider_payment_id",
        "provider_charge_id",
        "client_secret",
        "next_action_url",
        "failure_code",
        "decline_code",
        "failure_message",
        "refund_held",
        "refund_succeeded",
        "late_capture_at",
    }
)
_OPEN = [s.name for s in OPEN_STATES]

# -- documents -----------------------------------------------------------------------------------

Json = dict[str, Any]


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def line_to_json(item: LineItem) -> Json:
    return {
        "ticket_type_id": item.ticket_type_id,
        "description": item.description,
        "unit_price": item.unit_price,
        "quantity": item.quantity,
        "section": item.section,
        "row": item.row,
        "seat": item.seat,
        "ticket_ids": list(item.ticket_ids),
    }


def line_from_json(d: Json) -> LineItem:
    return LineItem(
        ticket_type_id=str(d["ticket_type_id"]),
        quantity=int(d["quantity"]),
        unit_price=int(d["unit_price"]),
        description=str(d.get("description", "")),
        section=str(d.get("section", "")),
        row=str(d.get("row", "")),
        seat=str(d.get("seat", "")),
        ticket_ids=tuple(str(t) for t in d.get("ticket_ids", ())),
    )


def fees_to_json(q: FeeQuote) -> Json:
    j = q.tax.jurisdiction
    return {
        "currency": q.currency,
        "subtotal": q.subtotal,
        "ticket_count": q.ticket_count,
        "tier": q.tier.name,
        "platform_fee_bps": q.platform_fee_bps,
        "platform_fee": q.platform_fee,
        "gas_fee_per_ticket": q.gas_fee_per_ticket,
        "gas_fee": q.gas_fee,
        "tax": {
            "jurisdiction": {
                "country_code": j.country_code,
                "region_code": j.region_code,
                "locality": j.locality,
                "postal_code": j.postal_code,
                "entertainment_tax_applies": j.entertainment_tax_applies,
            },
            "state_bps": q.tax.rates.state_bps,
            "local_bps": q.tax.rates.local_bps,
            "special_bps": q.tax.rates.special_bps,
            "state_tax": q.tax.state_tax,
            "local_tax": q.tax.local_tax,
            "special_tax": q.tax.special_tax,
        },
    }


def fees_from_json(d: Json) -> FeeQuote:
    tax = d["tax"]
    j = tax["jurisdiction"]
    return FeeQuote(
        currency=str(d["currency"]),
        subtotal=int(d["subtotal"]),
        ticket_count=int(d["ticket_count"]),
        tier=VenueTier[str(d["tier"])],
        platform_fee_bps=int(d["platform_fee_bps"]),
        platform_fee=int(d["platform_fee"]),
        gas_fee_per_ticket=int(d["gas_fee_per_ticket"]),
        gas_fee=int(d["gas_fee"]),
        tax=TaxQuote(
            jurisdiction=Jurisdiction(
                country_code=str(j["country_code"]),
                region_code=str(j["region_code"]),
                locality=str(j["locality"]),
                postal_code=str(j["postal_code"]),
                entertainment_tax_applies=bool(j["entertainment_tax_applies"]),
            ),
            rates=TaxRates(int(tax["state_bps"]), int(tax["local_bps"]), int(tax["special_bps"])),
            state_tax=int(tax["state_tax"]),
            local_tax=int(tax["local_tax"]),
            special_tax=int(tax["special_tax"]),
        ),
    )


def contact_to_json(c: Contact) -> Json:
    return {
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "wallet_address": c.wallet_address,
        "locale": c.locale,
        "time_zone": c.time_zone,
    }


def contact_from_json(d: Json) -> Contact:
    return Contact(**{k: str(d.get(k, "")) for k in contact_to_json(Contact())})


def event_to_json(e: EventDetails) -> Json:
    return {
        "event_name": e.event_name,
        "venue_name": e.venue_name,
        "starts_at": e.starts_at.isoformat() if e.starts_at is not None else None,
        "image_url": e.image_url,
    }


def event_from_json(d: Json) -> EventDetails:
    starts_at = d.get("starts_at")
    return EventDetails(
        event_name=str(d.get("event_name", "")),
        venue_name=str(d.get("venue_name", "")),
        starts_at=datetime.fromisoformat(starts_at) if starts_at else None,
        image_url=str(d.get("image_url", "")),
    )


def _payment(row: asyncpg.Record) -> Payment:
    fees = row["fees"]
    return Payment(
        id=row["id"],
        order_id=row["order_id"],
        venue_id=row["venue_id"],
        event_id=row["event_id"],
        buyer_id=row["buyer_id"],
        currency=row["currency"],
        status=PaymentStatus[row["status"]],
        subtotal=row["subtotal"],
        platform_fee=row["platform_fee"],
        gas_fee=row["gas_fee"],
        tax_total=row["tax_total"],
        total=row["total"],
        refund_held=row["refund_held"],
        refund_succeeded=row["refund_succeeded"],
        provider=row["provider"],
        provider_payment_id=row["provider_payment_id"],
        provider_charge_id=row["provider_charge_id"],
        payment_method_id=row["payment_method_id"],
        client_secret=row["client_secret"],
        next_action_url=row["next_action_url"],
        failure_code=row["failure_code"],
        decline_code=row["decline_code"],
        failure_message=row["failure_message"],
        line_items=tuple(line_from_json(d) for d in json.loads(row["line_items"])),
        fees=fees_from_json(json.loads(fees)) if fees is not None else None,
        buyer_contact=contact_from_json(json.loads(row["buyer_contact"])),
        event=event_from_json(json.loads(row["event_details"])),
        metadata={str(k): str(v) for k, v in json.loads(row["metadata"]).items()},
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        succeeded_at=row["succeeded_at"],
        late_capture_at=row["late_capture_at"],
        traceparent=row.get("traceparent") or "",
        tracestate=row.get("tracestate") or "",
        marketing_consent=bool(row.get("marketing_consent")),
    )


# -- reads ---------------------------------------------------------------------------------------


async def get(
    conn: asyncpg.Connection, payment_id: uuid.UUID, *, for_update: bool = False
) -> Payment | None:
    row = await conn.fetchrow("SELECT * FROM payments WHERE id = $1" + lock(for_update), payment_id)
    return None if row is None else _payment(row)


async def find_by_provider_id(
    conn: asyncpg.Connection, provider_payment_id: str, *, for_update: bool = False
) -> Payment | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE provider_payment_id = $1" + lock(for_update),
        provider_payment_id,
    )
    return None if row is None else _payment(row)


async def find_by_charge(
    conn: asyncpg.Connection, charge_id: str, *, for_update: bool = False
) -> Payment | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE provider_charge_id = $1" + lock(for_update), charge_id
    )
    return None if row is None else _payment(row)


async def list_payments(
    conn: asyncpg.Connection,
    flt: PaymentFilter,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[Payment]:
    """Newest first, keyset-paginated on (created_at, id)."""
    where: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if flt.buyer_id:
        where.append(f"buyer_id = {arg(flt.buyer_id)}")
    if flt.venue_ids:
        where.append(f"venue_id = ANY({arg(list(flt.venue_ids))}::text[])")
    if flt.event_id:
        where.append(f"event_id = {arg(flt.event_id)}")
    if flt.order_id:
        where.append(f"order_id = {arg(flt.order_id)}")
    if flt.statuses:
        where.append(f"status = ANY({arg([s.name for s in flt.statuses])}::text[])")
    if flt.created_from is not None:
        where.append(f"created_at >= {arg(flt.created_from)}")
    if flt.created_to is not None:
        where.append(f"created_at < {arg(flt.created_to)}")
    if after is not None:
        where.append(f"(created_at, id) < ({arg(after[0])}, {arg(after[1])})")
    sql = "SELECT * FROM payments"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}"
    return [_payment(r) for r in await conn.fetch(sql, *args)]


async def stuck(
    conn: asyncpg.Connection, *, older_than_s: float, limit: int, ids: Sequence[uuid.UUID] = ()
) -> list[Payment]:
    """Open payments unchanged for `older_than_s` (or the listed ones, whatever their age)."""
    if ids:
        rows = await conn.fetch(
            "SELECT * FROM payments WHERE id = ANY($1::uuid[]) AND status = ANY($2::text[]) "
            "ORDER BY updated_at",
            list(ids),
            _OPEN,
        )
    else:
        rows = await conn.fetch(
            """
            SELECT * FROM payments
            WHERE status = ANY($3::text[]) AND updated_at < now() - make_interval(secs => $1)
            ORDER BY updated_at LIMIT $2
            """,
            float(older_than_s),
            limit,
            _OPEN,
        )
    return [_payment(r) for r in rows]


# -- writes --------------------------------------------------------------------------------------


async def insert(conn: asyncpg.Connection, p: NewPayment) -> bool:
    """Insert a new payment; False when a payment with this id already exists. Raises
    OrderHasLivePayment when the order already has an open or paid payment."""
    q = p.quote
    try:
        row = await conn.fetchrow(
            """
            INSERT INTO payments (id, order_id, venue_id, event_id, buyer_id, currency, status,
                                  subtotal, platform_fee, gas_fee, tax_total, total,
                                  payment_method_id, provider_payment_id, line_items, fees,
                                  buyer_contact, event_details, metadata, created_by,
                                  traceparent, tracestate, marketing_consent)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                    $15::jsonb, $16::jsonb, $17::jsonb, $18::jsonb, $19::jsonb, $20, $21, $22,
                    $23)
            ON CONFLICT (id) DO NOTHING RETURNING id
            """,
            p.id,
            p.order_id,
            p.venue_id,
            p.event_id,
            p.buyer_id,
            p.currency,
            p.status.name,
            q.subtotal,
            q.platform_fee,
            q.gas_fee,
            q.tax.total_tax,
            q.total,
            p.payment_method_id,
            p.provider_payment_id,
            _dumps([line_to_json(i) for i in p.line_items]),
            _dumps(fees_to_json(q)),
            _dumps(contact_to_json(p.buyer_contact)),
            _dumps(event_to_json(p.event)),
            _dumps(dict(p.metadata)),
            p.created_by,
            p.traceparent or None,
            p.tracestate or None,
            p.marketing_consent,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "payments_order_live_idx":
            raise OrderHasLivePayment(
                f"order {p.order_id} already has a payment in progress or paid",
                {"order_id": p.order_id},
            ) from None
        raise
    return row is not None


async def update(conn: asyncpg.Connection, payment_id: uuid.UUID, changes: Changes) -> Payment:
    """Change non-status fields (status changes go through `transition`)."""
    sets, values = assignments(changes, UPDATABLE, first=2)
    row = await conn.fetchrow(
        f"UPDATE payments SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",
        payment_id,
        *values,
    )
    if row is None:
        raise LookupError(f"payment {payment_id} vanished")
    return _payment(row)


async def transition(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    target: PaymentStatus,
    *,
    cause: Cause,
    changes: Changes | None = None,
    from_states: Collection[PaymentStatus] | None = None,
) -> Payment | None:
    """Move a payment to `target` if the state machine allows it from its current state.

    The WHERE clause admits only the states `target` may be entered from, so the database
    refuses an invalid (or stale, out-of-order) transition even under concurrent writers.
    Returns the updated payment, or None when the transition is not allowed (nothing changed).
    The transition and its cause are recorded in payment_transitions by the same statement.

    `from_states` replaces the table's sources for the one explicit correction outside it (the
    late capture, `domain.states.LATE_CAPTURE_FROM`); every other caller leaves it out.
    """
    sets, values = assignments(changes or {}, UPDATABLE, first=6)
    succeeded = (
        ", succeeded_at = coalesce(succeeded_at, now())"
        if target is PaymentStatus.SUCCEEDED
        else ""
    )
    row = await conn.fetchrow(
        f"""
        WITH before AS (SELECT status FROM payments WHERE id = $1 FOR UPDATE),
        moved AS (
            UPDATE payments SET status = $2, updated_at = now(){succeeded}
                {", " + sets if sets else ""}
            FROM before
            WHERE payments.id = $1 AND payments.status = ANY($3::text[])
            RETURNING payments.*, before.status AS from_status
        ),
        recorded AS (
            INSERT INTO payment_transitions (payment_id, from_status, to_status, cause_kind,
                                             cause_ref)
            SELECT id, from_status, $2, $4, $5 FROM moved
        )
        SELECT * FROM moved
        """,
        payment_id,
        target.name,
        [s.name for s in (allowed_from(target) if from_states is None else from_states)],
        cause.kind.value,
        cause.ref,
        *values,
    )
    return None if row is None else _payment(row)


async def record_creation(conn: asyncpg.Connection, payment_id: uuid.UUID, cause: Cause) -> None:
    await conn.execute(
        "INSERT INTO payment_transitions (payment_id, from_status, to_status, cause_kind, "
        "cause_ref) VALUES ($1, NULL, 'PENDING', $2, $3)",
        payment_id,
        cause.kind.value,
        cause.ref,
    )
