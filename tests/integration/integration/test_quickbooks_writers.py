"""The QuickBooks writers (sync/writers/quickbooks.py) against the QuickBooks stand-in over
HTTP, through the service's own token keeper and `quickbooks` guard: Items, Customers, Sales
and Refund Receipts written in batches with Intuit's requestid (a resent batch creates nothing
twice), updates with the current SyncToken, a duplicate name adopted, receipt lines pointing at
the synced Items (or the one tickets item), one refused record failing alone, deletes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from integration_service.domain.model import EntityType, Provider
from integration_service.sync import registry
from integration_service.sync.ports import OutRecord
from integration_service.sync.writers import quickbooks as qbw
from meshdev.standins.quickbooks import QuickBooksServer
from tests.integration.integration.support import Client
from tests.integration.integration.writer_support import Contexts, mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

USD = "USD"


def _ticket(n: int, price: int = 2125) -> dict[str, Any]:
    return {
        "id": f"tt-{n:04d}",
        "name": f"Ticket type {n}",
        "description": "Standing",
        "price": {"amount_minor": price, "currency": USD},
    }


def _out(entity: EntityType, record: dict[str, Any], external_id: str | None = None) -> OutRecord:
    return mapped(Provider.QUICKBOOKS, entity, record, external_id)


@pytest.fixture
async def contexts(client: Client) -> AsyncIterator[Contexts]:
    async with writer_contexts(
        client,
        pb.PROVIDER_QUICKBOOKS,
        client.app.settings.quickbooks_api_base,  # type: ignore[attr-defined]
    ) as made:
        yield made


def test_the_writers_are_registered() -> None:
    registry.load()
    for entity in (EntityType.PRODUCT, EntityType.CUSTOMER, EntityType.PAYMENT, EntityType.REFUND):
        assert registry.WRITERS[(Provider.QUICKBOOKS, entity)].batch_size == 30


def test_decimal_strings_are_written_as_exact_json_numbers() -> None:
    body = {"UnitPrice": "19.99", "Name": "19.99", "Line": [{"Amount": qbw._Number("0.10")}]}
    assert qbw.dumps(body) == b'{"UnitPrice": 19.99, "Name": "19.99", "Line": [{"Amount": 0.10}]}'


async def test_items_are_created_once_updated_and_a_duplicate_name_adopted(
    contexts: Contexts, quickbooks: QuickBooksServer
) -> None:
    ctx = contexts(EntityType.PRODUCT)
    batch = [_out(EntityType.PRODUCT, _ticket(n)) for n in range(30)]
    first = await qbw.ITEMS.write(ctx, batch)
    assert [r.error_code for r in first] == [None] * 30
    ids = [r.external_id for r in first]
    assert len(set(ids)) == 30
    items = {i["Sku"]: i for i in quickbooks.records("Item")}
    assert len(items) == 30 and items["tt-0007"]["UnitPrice"] == Decimal("21.25")

    # The engine resends a batch it lost the answer of: same requestid, nothing created twice.
    again = await qbw.ITEMS.write(ctx, batch)
    assert [r.external_id for r in again] == ids
    assert len(quickbooks.records("Item")) == 30

    changed = _out(EntityType.PRODUCT, _ticket(7, price=2500), external_id=ids[7])
    [updated] = await qbw.ITEMS.write(ctx, [changed])
    assert (updated.external_id, updated.error_code) == (ids[7], None)
    item = next(i for i in quickbooks.records("Item") if i["Id"] == ids[7])
    assert item["UnitPrice"] == Decimal("25.00") and item["SyncToken"] == "1"

    # Written before our id map knew it (another version, so another requestid): adopted.
    known = _out(EntityType.PRODUCT, {**_ticket(3), "description": "Seated"})
    [adopted] = await qbw.ITEMS.write(ctx, [known])
    assert (adopted.external_id, adopted.error_code) == (ids[3], None)
    assert len(quickbooks.records("Item")) == 30
    assert next(i for i in quickbooks.records("Item") if i["Id"] == ids[3])["Description"] == (
        "Seated"
    )

    [gone] = await qbw.ITEMS.delete(ctx, [ids[0]])
    assert gone.error_code is None
    assert next(i for i in quickbooks.records("Item") if i["Id"] == ids[0])["Active"] is False


async def test_receipts_once_each_with_lines_on_the_synced_items(
    contexts: Contexts, quickbooks: QuickBooksServer
) -> None:
    [ga] = await qbw.ITEMS.write(
        contexts(EntityType.PRODUCT), [_out(EntityType.PRODUCT, _ticket(1))]
    )
    sale = {
        "id": str(uuid.uuid4()),
        "occurred_at": "2026-05-01T18:00:00Z",
        "amount": {"amount_minor": 5250, "currency": USD},
        "customer": {"email": "Ada@Example.com"},
        "description": "Order 42",
        "lines": [
            {
                "ticket_type_id": "tt-0001",
                "description": "GA",
                "quantity": 2,
                "unit_price": {"amount_minor": 2125, "currency": USD},
            },
            {
                "ticket_type_id": "never-synced",
                "description": "Parking",
                "quantity": 1,
                "unit_price": {"amount_minor": 1000, "currency": USD},
            },
        ],
    }
    sales = contexts(EntityType.PAYMENT)
    [written] = await qbw.SALES_RECEIPTS.write(sales, [_out(EntityType.PAYMENT, sale)])
    assert written.error_code is None
    [receipt] = quickbooks.records("SalesReceipt")
    assert receipt["Id"] == written.external_id
    assert receipt["PrivateNote"] == sale["id"] and receipt["TxnDate"] == "2026-05-01"
    assert receipt["TotalAmt"] == Decimal("52.50")
    refs = [line["SalesItemLineDetail"]["ItemRef"]["value"] for line in receipt["Line"]]
    generic = next(i for i in quickbooks.records("Item") if i["Name"] == qbw.GENERIC_ITEM_NAME)
    assert refs == [ga.external_id, generic["Id"]]

    refund = {
        "id": str(uuid.uuid4()),
        "payment_id": sale["id"],
        "occurred_at": "2026-05-02T09:00:00Z",
        "amount": {"amount_minor": 1000, "currency": USD},
        "lines": [],
        "reason": "parking cancelled",
    }
    other = {**refund, "id": str(uuid.uuid4()), "amount": {"amount_minor": 1, "currency": USD}}
    refunds = contexts(EntityType.REFUND)
    batch = [_out(EntityType.REFUND, refund), _out(EntityType.REFUND, other)]
    assert [r.error_code for r in await qbw.REFUND_RECEIPTS.write(refunds, batch)] == [None, None]
    assert [r.error_code for r in await qbw.REFUND_RECEIPTS.write(refunds, batch)] == [None, None]
    await qbw.SALES_RECEIPTS.write(sales, [_out(EntityType.PAYMENT, sale)])
    receipts = quickbooks.records("RefundReceipt")
    assert sorted(r["TotalAmt"] for r in receipts) == [Decimal("0.01"), Decimal("10.00")]
    assert quickbooks.receipt_refs("RefundReceipt")[refund["id"]] == 1
    assert quickbooks.receipt_refs("SalesReceipt")[sale["id"]] == 1
    assert quickbooks.duplicates() == {"SalesReceipt": {}, "RefundReceipt": {}}
    assert len([i for i in quickbooks.records("Item") if i["Name"] == qbw.GENERIC_ITEM_NAME]) == 1


async def test_a_record_quickbooks_refuses_fails_alone(
    contexts: Contexts, quickbooks: QuickBooksServer
) -> None:
    ctx = contexts(EntityType.CUSTOMER)
    good = _out(EntityType.CUSTOMER, {"id": "u1", "email": "ada@example.com", "given_name": "Ada"})
    bad = _out(EntityType.CUSTOMER, {"id": "u2", "email": "bob@example.com"})
    bad = OutRecord(bad.internal_id, {**bad.fields, "DisplayName": "x" * 501}, None, "v")
    results = await qbw.CUSTOMERS.write(ctx, [good, bad])
    assert results[0].error_code is None and results[0].external_id
    assert (results[1].error_code, results[1].external_id) == ("quickbooks_2050", None)
    assert [c["DisplayName"] for c in quickbooks.records("Customer")] == ["ada@example.com"]
