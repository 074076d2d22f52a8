"""The double-entry ledger: journal transactions and their entries (append-only).

One journal transaction per money movement about one provider object; (object_id, kind) is
unique, so a webhook and a synchronous confirmation can never post the same money twice. Balances
are derived from entries, never stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from payment_service.domain.ledger import Account, EntryKind, Posting


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


@dataclass(frozen=True, slots=True)
class VenueLedger:
    """Sums of a venue's accounts in one currency (credit balances as positive numbers)."""

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


async def check(conn: asyncpg.Connection) -> list[str]:
    """Every invariant of the ledger that does not hold (empty list = all good).

    * every journal transaction has at least two entries and sums to zero;
    * the whole ledger sums to zero per currency;
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
        captured = row["status"] in ("SUCCEEDED", "PARTIALLY_REFUNDED", "REFUNDED", "DISPUTED")
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
