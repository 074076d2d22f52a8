"""SQL of the payment service: payments, transitions, refunds, payouts, ledger, inbox, venues.

Functions take an open connection so callers compose them into one transaction (a state change,
its ledger posting and its outbox event commit together or not at all). The state machine's
table is enforced here by conditional UPDATEs (`transition`), the ledger's "never twice" by the
(object_id, kind) unique constraint (`post`), and refund limits by the payment's row lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from payment_service.domain.fees import Jurisdiction
from payment_service.domain.ledger import Account, EntryKind, Posting
from payment_service.domain.states import (
    CauseKind,
    PaymentStatus,
    PayoutStatus,
    RefundStatus,
    allowed_from,
)

R = TypeVar("R")


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _from_row(cls: type[R], row: asyncpg.Record) -> R:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
    return cls(**{k: row[k] for k in row.keys() if k in names})  # noqa: SIM118


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: uuid.UUID
    order_id: str
    venue_id: str
    event_id: str
    buyer_id: str
    currency: str
    status: str
    subtotal: int
    platform_fee: int
    gas_fee: int
    tax_total: int
    total: int
    refund_held: int
    refund_succeeded: int
    provider: str
    provider_payment_id: str | None
    provider_charge_id: str | None
    payment_method_id: str
    client_secret: str | None
    next_action_url: str | None
    failure_code: str | None
    decline_code: str | None
    failure_message: str | None
    details: bytes
    created_by: str
    created_at: datetime
    updated_at: datetime
    succeeded_at: datetime | None
    # Set when Stripe captured money after we had closed the payment (see core.Core).
    late_capture_at: datetime | None

    @property
    def state(self) -> PaymentStatus:
        return PaymentStatus[self.status]

    @property
    def refundable(self) -> int:
        return self.total - self.refund_held


@dataclass(frozen=True, slots=True)
class RefundRecord:
    id: uuid.UUID
    seq: int
    payment_id: uuid.UUID
    status: str
    amount: int
    currency: str
    reason: int
    note: str
    ticket_ids: list[str]
    provider_refund_id: str | None
    failure_reason: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def state(self) -> RefundStatus:
        return RefundStatus[self.status]


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    id: uuid.UUID
    venue_id: str
    currency: str
    status: str
    amount: int
    fee: int
    net_amount: int
    instant: bool
    statement_descriptor: str
    provider_payout_id: str | None
    failure_code: str | None
    failure_message: str | None
    expected_arrival_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime

    @property
    def state(self) -> PayoutStatus:
        return PayoutStatus[self.status]


class OrderHasLivePayment(Exception):
    """Another payment of the same order is open or succeeded (unique partial index)."""


# -- venues --------------------------------------------------------------------------------------


async def upsert_venue(conn: asyncpg.Connection, venue_id: str, j: Jurisdiction) -> None:
    await conn.execute(
        """
        INSERT INTO venues (id, country_code, region_code, locality, postal_code,
                            entertainment_tax)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (id) DO UPDATE SET
            country_code = EXCLUDED.country_code, region_code = EXCLUDED.region_code,
            locality = EXCLUDED.locality, postal_code = EXCLUDED.postal_code,
            entertainment_tax = EXCLUDED.entertainment_tax, updated_at = now()
        """,
        venue_id,
        j.country_code.upper(),
        j.region_code.upper(),
        j.locality,
        j.postal_code,
        j.entertainment_tax_applies,
    )


async def get_venue(
    conn: asyncpg.Connection, venue_id: str, *, for_update: bool = False
) -> Jurisdiction | None:
    row = await conn.fetchrow(
        "SELECT * FROM venues WHERE id = $1" + (" FOR UPDATE" if for_update else ""), venue_id
    )
    if row is None:
        return None
    return Jurisdiction(
        country_code=row["country_code"],
        region_code=row["region_code"],
        locality=row["locality"],
        postal_code=row["postal_code"],
        entertainment_tax_applies=row["entertainment_tax"],
    )


async def venue_volume(conn: asyncpg.Connection, venue_id: str, days: int = 30) -> int:
    """The venue's sales credited in the trailing `days` (for the tier), minor units."""
    value = await conn.fetchval(
        """
        SELECT coalesce(-sum(amount), 0) FROM ledger_entries
        WHERE venue_id = $1 AND account = 'venue_payable' AND amount < 0
          AND created_at > now() - make_interval(days => $2)
        """,
        venue_id,
        days,
    )
    return int(value)


# -- payments ------------------------------------------------------------------------------------


async def insert_payment(conn: asyncpg.Connection, values: dict[str, Any]) -> bool:
    """Insert a new PENDING payment; False when a payment with this id already exists."""
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    try:
        row = await conn.fetchrow(
            f"INSERT INTO payments ({', '.join(columns)}) VALUES ({placeholders}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            *values.values(),
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "payments_order_live_idx":
            raise OrderHasLivePayment(str(values.get("order_id"))) from None
        raise
    return row is not None


async def get_payment(
    conn: asyncpg.Connection, payment_id: uuid.UUID, *, for_update: bool = False
) -> PaymentRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE id = $1" + (" FOR UPDATE" if for_update else ""),
        payment_id,
    )
    return None if row is None else _from_row(PaymentRecord, row)


async def find_payment_by_provider_id(
    conn: asyncpg.Connection, provider_payment_id: str, *, for_update: bool = False
) -> PaymentRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE provider_payment_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        provider_payment_id,
    )
    return None if row is None else _from_row(PaymentRecord, row)


async def find_payment_by_charge(
    conn: asyncpg.Connection, charge_id: str, *, for_update: bool = False
) -> PaymentRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE provider_charge_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        charge_id,
    )
    return None if row is None else _from_row(PaymentRecord, row)


_UPDATABLE = frozenset(
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


async def update_payment(
    conn: asyncpg.Connection, payment_id: uuid.UUID, **changes: Any
) -> PaymentRecord:
    """Change non-status columns (status changes go through `transition`)."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable here: {sorted(unknown)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE payments SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",
        payment_id,
        *changes.values(),
    )
    if row is None:
        raise LookupError(f"payment {payment_id} vanished")
    return _from_row(PaymentRecord, row)


async def transition(
    conn: asyncpg.Connection,
    payment_id: uuid.UUID,
    target: PaymentStatus,
    *,
    cause: CauseKind,
    cause_ref: str,
    from_states: Collection[PaymentStatus] | None = None,
    **changes: Any,
) -> PaymentRecord | None:
    """Move a payment to `target` if the state machine allows it from its current state.

    The WHERE clause admits only the states `target` may be entered from, so the database
    refuses an invalid (or stale, out-of-order) transition even under concurrent writers.
    Returns the updated payment, or None when the transition is not allowed (nothing changed).
    The transition and its cause are recorded in payment_transitions by the same statement.

    `from_states` replaces the table's sources for one explicit correction outside it (the
    late-capture path, `domain.states.LATE_CAPTURE_FROM`); every other caller leaves it out.
    """
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable here: {sorted(unknown)}")
    sets = "".join(f", {name} = ${i}" for i, name in enumerate(changes, start=6))
    succeeded = (
        ", succeeded_at = coalesce(succeeded_at, now())"
        if target is PaymentStatus.SUCCEEDED
        else ""
    )
    row = await conn.fetchrow(
        f"""
        WITH before AS (SELECT status FROM payments WHERE id = $1 FOR UPDATE),
        moved AS (
            UPDATE payments SET status = $2, updated_at = now(){succeeded}{sets}
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
        cause.value,
        cause_ref,
        *changes.values(),
    )
    return None if row is None else _from_row(PaymentRecord, row)


async def record_creation(conn: asyncpg.Connection, payment_id: uuid.UUID, cause_ref: str) -> None:
    await conn.execute(
        "INSERT INTO payment_transitions (payment_id, from_status, to_status, cause_kind, "
        "cause_ref) VALUES ($1, NULL, 'PENDING', 'rpc', $2)",
        payment_id,
        cause_ref,
    )


async def transitions_of(conn: asyncpg.Connection, payment_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT from_status, to_status, cause_kind, cause_ref, created_at "
        "FROM payment_transitions WHERE payment_id = $1 ORDER BY id",
        payment_id,
    )
    return rows


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    buyer_id: str = ""
    venue_ids: Sequence[str] = ()
    event_id: str = ""
    order_id: str = ""
    statuses: Sequence[str] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None


async def list_payments(
    conn: asyncpg.Connection,
    flt: PaymentFilter,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[PaymentRecord]:
    """Newest first, keyset-paginated on (created_at, id)."""
    where: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
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
        where.append(f"status = ANY({arg(list(flt.statuses))}::text[])")
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
    rows = await conn.fetch(sql, *args)
    return [_from_row(PaymentRecord, r) for r in rows]


async def stuck_payments(
    conn: asyncpg.Connection, *, older_than_s: float, limit: int, ids: Sequence[uuid.UUID] = ()
) -> list[PaymentRecord]:
    if ids:
        rows = await conn.fetch(
            "SELECT * FROM payments WHERE id = ANY($1::uuid[]) "
            "AND status IN ('PENDING', 'PROCESSING', 'REQUIRES_ACTION') ORDER BY updated_at",
            list(ids),
        )
    else:
        rows = await conn.fetch(
            """
            SELECT * FROM payments
            WHERE status IN ('PENDING', 'PROCESSING', 'REQUIRES_ACTION')
              AND updated_at < now() - make_interval(secs => $1)
            ORDER BY updated_at LIMIT $2
            """,
            float(older_than_s),
            limit,
        )
    return [_from_row(PaymentRecord, r) for r in rows]


# -- refunds -------------------------------------------------------------------------------------


async def stuck_refunds(
    conn: asyncpg.Connection, *, older_than_s: float, limit: int, payment_ids: Sequence[uuid.UUID]
) -> list[RefundRecord]:
    """Refunds still waiting for the provider's answer past the threshold."""
    rows = await conn.fetch(
        """
        SELECT * FROM refunds
        WHERE status IN ('PENDING', 'REQUIRES_ACTION')
          AND updated_at < now() - make_interval(secs => $1)
          AND (cardinality($3::uuid[]) = 0 OR payment_id = ANY($3::uuid[]))
        ORDER BY updated_at LIMIT $2
        """,
        float(older_than_s),
        limit,
        list(payment_ids),
    )
    return [_from_row(RefundRecord, r) for r in rows]


async def insert_refund(conn: asyncpg.Connection, values: dict[str, Any]) -> RefundRecord:
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO refunds ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *",
        *values.values(),
    )
    assert row is not None
    return _from_row(RefundRecord, row)


async def get_refund(
    conn: asyncpg.Connection, refund_id: uuid.UUID, *, for_update: bool = False
) -> RefundRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM refunds WHERE id = $1" + (" FOR UPDATE" if for_update else ""), refund_id
    )
    return None if row is None else _from_row(RefundRecord, row)


async def find_refund_by_provider_id(
    conn: asyncpg.Connection, provider_refund_id: str, *, for_update: bool = False
) -> RefundRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM refunds WHERE provider_refund_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        provider_refund_id,
    )
    return None if row is None else _from_row(RefundRecord, row)


async def refunds_of(
    conn: asyncpg.Connection, payment_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[RefundRecord]]:
    result: dict[uuid.UUID, list[RefundRecord]] = {pid: [] for pid in payment_ids}
    if not payment_ids:
        return result
    rows = await conn.fetch(
        "SELECT * FROM refunds WHERE payment_id = ANY($1::uuid[]) ORDER BY seq",
        list(payment_ids),
    )
    for row in rows:
        result[row["payment_id"]].append(_from_row(RefundRecord, row))
    return result


async def update_refund(
    conn: asyncpg.Connection, refund_id: uuid.UUID, **changes: Any
) -> RefundRecord:
    allowed = {"status", "provider_refund_id", "failure_reason"}
    if set(changes) - allowed:
        raise ValueError(f"not updatable: {sorted(set(changes) - allowed)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE refunds SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",
        refund_id,
        *changes.values(),
    )
    if row is None:
        raise LookupError(f"refund {refund_id} vanished")
    return _from_row(RefundRecord, row)


# -- payouts -------------------------------------------------------------------------------------


async def insert_payout(conn: asyncpg.Connection, values: dict[str, Any]) -> bool:
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO payouts ({', '.join(columns)}) VALUES ({placeholders}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        *values.values(),
    )
    return row is not None


async def get_payout(
    conn: asyncpg.Connection, payout_id: uuid.UUID, *, for_update: bool = False
) -> PayoutRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM payouts WHERE id = $1" + (" FOR UPDATE" if for_update else ""), payout_id
    )
    return None if row is None else _from_row(PayoutRecord, row)


async def find_payout_by_provider_id(
    conn: asyncpg.Connection, provider_payout_id: str, *, for_update: bool = False
) -> PayoutRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM payouts WHERE provider_payout_id = $1"
        + (" FOR UPDATE" if for_update else ""),
        provider_payout_id,
    )
    return None if row is None else _from_row(PayoutRecord, row)


async def update_payout(
    conn: asyncpg.Connection, payout_id: uuid.UUID, **changes: Any
) -> PayoutRecord:
    allowed = {
        "status",
        "provider_payout_id",
        "failure_code",
        "failure_message",
        "expected_arrival_at",
    }
    if set(changes) - allowed:
        raise ValueError(f"not updatable: {sorted(set(changes) - allowed)}")
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE payouts SET {sets}, updated_at = now() WHERE id = $1 RETURNING *",
        payout_id,
        *changes.values(),
    )
    if row is None:
        raise LookupError(f"payout {payout_id} vanished")
    return _from_row(PayoutRecord, row)


async def paid_out_today(conn: asyncpg.Connection, venue_id: str, currency: str) -> int:
    """Payouts of the current UTC day that hold money (not failed or cancelled)."""
    value = await conn.fetchval(
        """
        SELECT coalesce(sum(amount), 0) FROM payouts
        WHERE venue_id = $1 AND currency = $2
          AND status NOT IN ('FAILED', 'CANCELLED')
          AND created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        """,
        venue_id,
        currency,
    )
    return int(value)


# -- ledger --------------------------------------------------------------------------------------


async def post(
    conn: asyncpg.Connection,
    posting: Posting,
    *,
    cause: str,
    payment_id: uuid.UUID | None = None,
    venue_id: str | None = None,
) -> bool:
    """Write a journal transaction; False (and nothing written) if this (object, kind) is
    already posted — the guarantee that a webhook and an RPC never post the same money twice."""
    # One statement: the journal row and its entries, or nothing when (object, kind) exists.
    tag = await conn.execute(
        """
        WITH txn AS (
            INSERT INTO journal_transactions (id, kind, object_id, currency, payment_id,
                                              venue_id, cause)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (object_id, kind) DO NOTHING
            RETURNING id
        )
        INSERT INTO ledger_entries (txn_id, account, venue_id, currency, amount, available_at)
        SELECT txn.id, e.account, e.venue_id, $4, e.amount, e.available_at
        FROM txn, unnest($8::text[], $9::text[], $10::bigint[], $11::timestamptz[])
            AS e(account, venue_id, amount, available_at)
        """,
        uuid.uuid4(),
        posting.kind.value,
        posting.object_id,
        posting.currency,
        payment_id,
        venue_id,
        cause,
        [e.account.value for e in posting.entries],
        [e.venue_id for e in posting.entries],
        [e.amount for e in posting.entries],
        [e.available_at for e in posting.entries],
    )
    return int(tag.rsplit(" ", 1)[-1]) > 0


async def is_posted(conn: asyncpg.Connection, object_id: str, kind: EntryKind) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM journal_transactions WHERE object_id = $1 AND kind = $2",
            object_id,
            kind.value,
        )
    )


async def posted_refund_total(conn: asyncpg.Connection, payment_id: uuid.UUID) -> int:
    """Refunded money already in the ledger for this payment (refunds minus reversals)."""
    value = await conn.fetchval(
        """
        SELECT coalesce(sum(-e.amount), 0)
        FROM journal_transactions t JOIN ledger_entries e ON e.txn_id = t.id
        WHERE t.payment_id = $1 AND t.kind IN ('refund', 'refund_reversal')
          AND e.account = 'stripe_clearing'
        """,
        payment_id,
    )
    return int(value)


async def charge_available_at(conn: asyncpg.Connection, payment_id: uuid.UUID) -> datetime | None:
    """When the venue's share of this payment becomes available (from its charge posting)."""
    value: datetime | None = await conn.fetchval(
        """
        SELECT e.available_at
        FROM journal_transactions t JOIN ledger_entries e ON e.txn_id = t.id
        WHERE t.payment_id = $1 AND t.kind = 'charge' AND e.account = 'venue_payable'
        LIMIT 1
        """,
        payment_id,
    )
    return value


@dataclass(frozen=True, slots=True)
class VenueLedger:
    pending: int
    available: int
    disputed: int


async def venue_ledger(conn: asyncpg.Connection, venue_id: str, currency: str) -> VenueLedger:
    row = await conn.fetchrow(
        """
        SELECT
          coalesce(-sum(amount) FILTER (WHERE account = $3 AND available_at > now()), 0)
              AS pending,
          coalesce(-sum(amount) FILTER (WHERE account = $3 AND available_at <= now()), 0)
              AS available,
          coalesce(-sum(amount) FILTER (WHERE account = $4), 0) AS disputed
        FROM ledger_entries
        WHERE venue_id = $1 AND currency = $2 AND account IN ($3, $4)
        """,
        venue_id,
        currency,
        Account.VENUE_PAYABLE.value,
        Account.VENUE_RESERVED.value,
    )
    assert row is not None
    return VenueLedger(int(row["pending"]), int(row["available"]), int(row["disputed"]))


async def account_balances(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """(account, currency) → sum of entries (debit-positive)."""
    rows = await conn.fetch(
        "SELECT account, currency, sum(amount) AS total FROM ledger_entries "
        "GROUP BY account, currency"
    )
    return {(r["account"], r["currency"]): int(r["total"]) for r in rows}


async def check_ledger(conn: asyncpg.Connection) -> list[str]:
    """Every invariant of the ledger that does not hold (empty list = all good).

    * every journal transaction has at least two entries and sums to zero;
    * the whole ledger sums to zero per currency;
    * no (object, kind) is posted twice (also a unique constraint);
    * every captured payment has exactly one charge posting of its total, and no payment that
      never captured has one;
    * the refunds in the ledger match the payment's succeeded refunds.
    """
    problems: list[str] = []
    for row in await conn.fetch(
        """
        SELECT t.id, t.kind, t.object_id, count(e.id) AS n, coalesce(sum(e.amount), 0) AS total
        FROM journal_transactions t LEFT JOIN ledger_entries e ON e.txn_id = t.id
        GROUP BY t.id HAVING count(e.id) < 2 OR coalesce(sum(e.amount), 0) <> 0
        """
    ):
        problems.append(
            f"transaction {row['kind']}:{row['object_id']} has {row['n']} entries "
            f"summing to {row['total']}"
        )
    for row in await conn.fetch(
        "SELECT currency, sum(amount) AS total FROM ledger_entries GROUP BY currency "
        "HAVING sum(amount) <> 0"
    ):
        problems.append(f"ledger in {row['currency']} sums to {row['total']}")
    for row in await conn.fetch(
        """
        SELECT p.id, p.status, p.total, count(t.id) AS charges,
               coalesce(sum(e.amount), 0) AS charged
        FROM payments p
        LEFT JOIN journal_transactions t ON t.payment_id = p.id AND t.kind = 'charge'
        LEFT JOIN ledger_entries e ON e.txn_id = t.id AND e.account = 'stripe_clearing'
        GROUP BY p.id
        """
    ):
        captured = row["status"] in (
            "SUCCEEDED",
            "PARTIALLY_REFUNDED",
            "REFUNDED",
            "DISPUTED",
        )
        if captured and (row["charges"] != 1 or row["charged"] != row["total"]):
            problems.append(
                f"payment {row['id']} ({row['status']}) has {row['charges']} charge postings "
                f"of {row['charged']} for a total of {row['total']}"
            )
        if not captured and row["charges"]:
            problems.append(f"payment {row['id']} ({row['status']}) has a charge posting")
    for row in await conn.fetch(
        """
        SELECT p.id, p.refund_succeeded,
               coalesce((SELECT sum(-e.amount)
                         FROM journal_transactions t JOIN ledger_entries e ON e.txn_id = t.id
                         WHERE t.payment_id = p.id AND e.account = 'stripe_clearing'
                           AND t.kind IN ('refund', 'refund_reversal')), 0) AS posted
        FROM payments p
        """
    ):
        if row["posted"] != row["refund_succeeded"]:
            problems.append(
                f"payment {row['id']} has {row['refund_succeeded']} refunded but "
                f"{row['posted']} refunds posted"
            )
    return problems


# -- webhook inbox -------------------------------------------------------------------------------


async def claim_event(
    conn: asyncpg.Connection,
    event_id: str,
    event_type: str,
    payload: bytes,
    *,
    lock_timeout_ms: int,
) -> datetime | None:
    """Record (or lock) the event's inbox row inside the caller's transaction.

    Returns its processed_at: not None means an earlier delivery already processed it. The row
    lock serialises concurrent deliveries of the same event. The same statement sets the
    transaction's lock_timeout (set_config(..., true) is SET LOCAL; evaluated before the row is
    inserted, so it already bounds this statement's own wait).
    """
    row = await conn.fetchrow(
        """
        WITH cfg AS (SELECT set_config('lock_timeout', $4, true))
        INSERT INTO webhook_inbox (event_id, provider, event_type, payload, attempts)
        SELECT $1, 'stripe', $2, $3, 1 FROM cfg
        ON CONFLICT (event_id) DO UPDATE SET attempts = webhook_inbox.attempts + 1
        RETURNING processed_at
        """,
        event_id,
        event_type,
        payload,
        f"{int(lock_timeout_ms)}ms",
    )
    assert row is not None
    processed: datetime | None = row["processed_at"]
    return processed


async def mark_event_processed(
    conn: asyncpg.Connection, event_id: str, outcome: str, payment_id: uuid.UUID | None
) -> None:
    await conn.execute(
        "UPDATE webhook_inbox SET processed_at = now(), outcome = $2, payment_id = $3, "
        "last_error = NULL WHERE event_id = $1",
        event_id,
        outcome,
        payment_id,
    )


async def record_event_failure(
    conn: asyncpg.Connection, event_id: str, event_type: str, payload: bytes, error: str
) -> None:
    """Outside the failed transaction: keep the event and its error for operators."""
    await conn.execute(
        """
        INSERT INTO webhook_inbox (event_id, provider, event_type, payload, attempts, last_error)
        VALUES ($1, 'stripe', $2, $3, 1, $4)
        ON CONFLICT (event_id) DO UPDATE SET last_error = EXCLUDED.last_error
        """,
        event_id,
        event_type,
        payload,
        error[:2000],
    )


# -- outbox (kit table) --------------------------------------------------------------------------


async def requeue_stuck_outbox(
    conn: asyncpg.Connection, *, older_than_s: float, limit: int, dry_run: bool
) -> list[uuid.UUID]:
    """Events that failed and sit in backoff past the threshold: make them due now.

    Events never attempted are only waiting for a relay (consumers are wired per topic), so
    they are not "stuck" and are left alone.
    """
    if dry_run:
        rows = await conn.fetch(
            """
            SELECT id FROM outbox
            WHERE delivered_at IS NULL AND attempts > 0 AND available_at > now()
              AND created_at < now() - make_interval(secs => $1)
            ORDER BY created_at LIMIT $2
            """,
            float(older_than_s),
            limit,
        )
    else:
        rows = await conn.fetch(
            """
            UPDATE outbox SET available_at = now()
            WHERE id IN (
                SELECT id FROM outbox
                WHERE delivered_at IS NULL AND attempts > 0 AND available_at > now()
                  AND created_at < now() - make_interval(secs => $1)
                ORDER BY created_at LIMIT $2
                FOR UPDATE SKIP LOCKED)
            RETURNING id
            """,
            float(older_than_s),
            limit,
        )
    return [r["id"] for r in rows]


async def post_reversal(
    conn: asyncpg.Connection,
    object_id: str,
    kind: EntryKind,
    reversal_kind: EntryKind,
    *,
    cause: str,
) -> bool:
    """Post the exact opposite of an earlier posting (once); False if there is nothing to
    reverse or it is already reversed."""
    original = await conn.fetchrow(
        "SELECT id, currency, payment_id, venue_id FROM journal_transactions "
        "WHERE object_id = $1 AND kind = $2",
        object_id,
        kind.value,
    )
    if original is None:
        return False
    txn_id = await conn.fetchval(
        """
        INSERT INTO journal_transactions (id, kind, object_id, currency, payment_id, venue_id,
                                          cause)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (object_id, kind) DO NOTHING
        RETURNING id
        """,
        uuid.uuid4(),
        reversal_kind.value,
        object_id,
        original["currency"],
        original["payment_id"],
        original["venue_id"],
        cause,
    )
    if txn_id is None:
        return False
    await conn.execute(
        """
        INSERT INTO ledger_entries (txn_id, account, venue_id, currency, amount, available_at)
        SELECT $1, account, venue_id, currency, -amount, available_at
        FROM ledger_entries WHERE txn_id = $2 ORDER BY id
        """,
        txn_id,
        original["id"],
    )
    return True
