"""Migration 0004: payments written with the serialized `details` bytes (a payment_pb2.Payment)
are converted into the JSONB documents, and read back exactly as they were shown before."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from google.protobuf import timestamp_pb2

from meshdev.testing.servers import TestTokens, channel_for
from meshkit.db import Database
from meshkit.migrations import KIT_MIGRATIONS, MigrationSource, migrate
from meshkit.server import App
from payment_service.api import convert
from payment_service.app import DEFINITION
from payment_service.store import payments
from tests.payment.integration.support import PaymentClient
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

P = payment_pb2
Start = Callable[..., Awaitable[App]]


def usd(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency="USD", amount_minor=amount)


def old_details() -> P.Payment:
    """The parts of a payment the old CreatePayment serialized into `details`."""
    starts = timestamp_pb2.Timestamp()
    starts.FromDatetime(datetime(2031, 5, 1, 19, 30, 15, 250_000, tzinfo=UTC))
    jurisdiction = P.TaxJurisdiction(
        country_code="US", region_code="TN", locality="Nashville", entertainment_tax_applies=True
    )
    return P.Payment(
        line_items=[
            P.LineItem(
                ticket_type_id="reserved",
                description="Orchestra",
                unit_price=usd(5_000),
                quantity=2,
                section="ORCH",
                row="C",
                seat="12",
                ticket_ids=["t-1", "t-2"],
            )
        ],
        fees=P.FeeBreakdown(
            subtotal=usd(10_000),
            ticket_count=2,
            venue_tier=P.VENUE_TIER_STARTER,
            platform_fee_bps=820,
            platform_fee=usd(820),
            gas_fee_per_ticket=usd(50),
            gas_fee=usd(100),
            tax=P.TaxBreakdown(
                jurisdiction=jurisdiction,
                state_tax_bps=700,
                state_tax=usd(700),
                local_tax_bps=225,
                local_tax=usd(225),
                special_tax_bps=100,
                special_tax=usd(100),
                total_tax=usd(1_025),
            ),
            total=usd(11_945),
            venue_payout=usd(10_000),
        ),
        buyer_contact=common_pb2.ContactInfo(
            name="Ada", email="ada@example.com", phone="+16155550100", locale="en-US"
        ),
        event=P.EventDetails(
            event_name="The Band", venue_name="Ryman", starts_at=starts, image_url="ipfs://x"
        ),
        metadata={"channel": "web", "note": "ünïcode"},
    )


async def insert_old(conn: asyncpg.Connection, details: bytes, order: str) -> uuid.UUID:
    payment_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO payments (id, order_id, venue_id, event_id, buyer_id, currency, status,
                              subtotal, platform_fee, gas_fee, tax_total, total,
                              payment_method_id, details, created_by)
        VALUES ($1, $2, 'venue-1', 'event-1', 'buyer-1', 'USD', 'PENDING',
                10000, 820, 100, 1025, 11945, 'pm_card_visa', $3, 'buyer-1')
        """,
        payment_id,
        order,
        details,
    )
    return payment_id


async def test_details_bytes_become_jsonb_documents(
    postgres_url: str,
    db_schema: str,
    tmp_path: Path,
    start_payment: Start,
    tokens: TestTokens,
    localstripe: str,
) -> None:
    # The schema as it stood before 0004, with rows in the old format.
    source = Path(DEFINITION.migrations.directory)
    before = tmp_path / "migrations"
    before.mkdir()
    for name in ("0001_baseline.sql", "0002_payments.sql", "0003_late_capture.sql"):
        shutil.copy(source / name, before / name)
    await migrate(postgres_url, db_schema, [KIT_MIGRATIONS, MigrationSource("payment", before)])
    db = await Database.connect(postgres_url, schema=db_schema)
    try:
        details = old_details()
        async with db.transaction() as conn:
            full = await insert_old(conn, details.SerializeToString(deterministic=True), "o-1")
            bare = P.Payment(line_items=[P.LineItem(ticket_type_id="ga", quantity=1)])
            minimal = await insert_old(conn, bare.SerializeToString(), "o-2")

        applied = await migrate(postgres_url, db_schema, [KIT_MIGRATIONS, DEFINITION.migrations])
        assert applied[0] == ("payment", 4)  # then any later ones

        # No RPC message is stored in any of payment's columns any more (the kit's own tables
        # keep idempotent replies and event envelopes).
        binary = await db.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND data_type = 'bytea' "
            "AND table_name NOT IN ('idempotency_keys', 'outbox', 'outbox_dead_letters')",
            db_schema,
        )
        # Only the provider's raw webhook body, kept as received for its signature.
        assert [(r["table_name"], r["column_name"]) for r in binary] == [
            ("webhook_inbox", "payload")
        ]
        documents = await db.fetch(
            "SELECT line_items, fees, buyer_contact, event_details, metadata FROM payments "
            "WHERE id = $1",
            full,
        )
        assert documents[0]["fees"] is not None

        async with db.acquire() as conn:
            converted = await payments.get(conn, full)
            plain = await payments.get(conn, minimal)
        assert converted is not None and plain is not None
        shown = convert.payment_proto(converted)
        assert list(shown.line_items) == list(details.line_items)
        assert shown.fees == details.fees
        assert shown.buyer_contact == details.buyer_contact
        assert shown.event == details.event
        assert dict(shown.metadata) == dict(details.metadata)
        assert converted.ticket_ids == ["t-1", "t-2"]
        assert plain.fees is None and plain.line_items[0].ticket_type_id == "ga"
        assert not convert.payment_proto(plain).HasField("fees")
    finally:
        await db.close()

    # The service runs on the migrated schema and shows the payment as before.
    app = await start_payment(register=False, db_schema=db_schema)
    async with channel_for(app) as channel:
        client = PaymentClient(
            app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
        )
        got = await client.get(str(full))
    assert list(got.line_items) == list(details.line_items)
    assert (got.fees, got.buyer_contact, got.event) == (
        details.fees,
        details.buyer_contact,
        details.event,
    )
