"""The database guards the ledger and the state machine even against code that tries otherwise."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from payment_service.domain import ledger
from payment_service.domain.settlement import Cause
from payment_service.domain.states import CauseKind, PaymentStatus
from payment_service.store import ledger as ledger_store
from payment_service.store import payments
from tests.payment.integration.support import PaymentClient


async def test_unbalanced_or_edited_entries_are_refused(client: PaymentClient, venue: str) -> None:
    await client.create()
    assert client.app.kit is not None
    db = client.app.kit.db
    txn = uuid.uuid4()
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO journal_transactions (id, kind, object_id, currency, cause) "
                "VALUES ($1, 'charge', 'pi_fake', 'USD', 'test')",
                txn,
            )
            await conn.execute(
                "INSERT INTO ledger_entries (txn_id, account, currency, amount) VALUES "
                "($1, 'stripe_clearing', 'USD', 100), ($1, 'platform_revenue', 'USD', -99)",
                txn,
            )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("UPDATE ledger_entries SET amount = amount + 1")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("DELETE FROM journal_transactions")
    async with db.acquire() as conn:
        assert await ledger_store.check(conn) == []


async def test_invalid_transitions_change_nothing(client: PaymentClient, venue: str) -> None:
    payment = await client.create()
    assert client.app.kit is not None
    async with client.app.kit.db.transaction() as conn:
        for target in (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.FAILED):
            moved = await payments.transition(
                conn, uuid.UUID(payment.id), target, cause=Cause(CauseKind.RPC, "test")
            )
            assert moved is None
    rows = await client.fetch("SELECT to_status FROM payment_transitions ORDER BY id")
    assert [r["to_status"] for r in rows] == ["PENDING", "SUCCEEDED"]


async def test_posting_twice_posts_once(client: PaymentClient, venue: str) -> None:
    payment = await client.create()
    assert client.app.kit is not None
    original = (await client.fetch("SELECT id FROM journal_transactions"))[0]["id"]
    posting = ledger.charge_posting(
        object_id=payment.provider_payment_id,
        currency="USD",
        venue_id=venue,
        split=ledger.Split(10_000, 820, 50, 925),
        available_at=payment.created_at.ToDatetime(),
    )
    async with client.app.kit.db.transaction() as conn:
        assert await ledger_store.post(conn, posting, cause="test") is False
    rows = await client.fetch("SELECT id FROM journal_transactions")
    assert [r["id"] for r in rows] == [original]
