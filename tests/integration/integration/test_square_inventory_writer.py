"""The Square inventory writer (sync/writers/square_inventory.py) against the Square stand-in
over HTTP, through the service's token keeper and guard: remaining tickets as physical counts
on the item variation of each ticket type (found by SKU the first time, by the id map's
external id afterwards), a ticket type not synced as a product failing alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import OutRecord
from integration_service.sync.writers import square_inventory as siw
from integration_service.sync.writers.square_catalog import SquareCatalogWriter
from meshdev.standins.square import DEV_MERCHANT_ID, SquareServer
from tests.integration.integration.support import Client
from tests.integration.integration.writer_support import Contexts, mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _level(n: int, remaining: int, external_id: str | None = None) -> OutRecord:
    record = {"id": f"tt-{n}", "product_id": f"tt-{n}", "remaining": remaining}
    return mapped(Provider.SQUARE, EntityType.INVENTORY, record, external_id)


@pytest.fixture
async def contexts(client: Client) -> AsyncIterator[Contexts]:
    api_base = client.app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api_base) as made:
        yield made


def _count(square: SquareServer, variation: str) -> Decimal | None:
    merchant = square.merchants[DEV_MERCHANT_ID]
    for (object_id, _location, state), count in merchant.counts.items():
        if object_id == variation and state == "IN_STOCK":
            return Decimal(count["quantity"])
    return None


async def test_counts_go_to_the_ticket_types_variations(
    contexts: Contexts, square: SquareServer
) -> None:
    products = [
        mapped(
            Provider.SQUARE,
            EntityType.PRODUCT,
            {
                "id": f"tt-{n}",
                "name": f"Ticket {n}",
                "price": {"amount_minor": 100, "currency": "USD"},
            },
        )
        for n in range(3)
    ]
    await SquareCatalogWriter().write(contexts(EntityType.PRODUCT), products)
    ctx = contexts(EntityType.INVENTORY)
    first = await siw.INVENTORY.write(ctx, [_level(0, 40), _level(1, 7), _level(9, 1)])
    assert [r.error_code for r in first] == [None, None, "square_product_not_synced"]
    assert first[2].retryable
    variations = [r.external_id for r in first[:2]]
    assert [_count(square, v) for v in variations if v] == [Decimal(40), Decimal(7)]

    [again] = await siw.INVENTORY.write(ctx, [_level(0, 39, external_id=variations[0])])
    assert (again.external_id, again.error_code) == (variations[0], None)
    assert _count(square, str(variations[0])) == Decimal(39)
