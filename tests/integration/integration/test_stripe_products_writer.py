"""The Stripe products writer (sync/writers/stripe_products.py) against the fast Stripe stand-in
over HTTP, through the service's token keeper and guard: products created with our own ids and
their default price, never twice (a resent create becomes an update), a new default price only
when the amount changes, a refused record failing alone, archiving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import OutRecord
from integration_service.sync.writers import stripe_products as spw
from meshdev.standins.stripe import StandInServer
from tests.integration.integration.support import Client
from tests.integration.integration.writer_support import (
    STRIPE_RESTRICTED_KEY,
    Contexts,
    mapped,
    writer_contexts,
)
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _ticket(n: int, price: int = 2500, external_id: str | None = None) -> OutRecord:
    record = {
        "id": f"tt-{n}",
        "name": f"Ticket {n}",
        "description": "General admission",
        "price": {"amount_minor": price, "currency": "USD"},
        "event": {"id": "ev-1", "starts_at": "2026-09-01T19:30:00Z"},
    }
    return mapped(Provider.STRIPE, EntityType.PRODUCT, record, external_id)


@pytest.fixture
async def contexts(client: Client, stripe_api: StandInServer) -> AsyncIterator[Contexts]:
    async with writer_contexts(client, pb.PROVIDER_STRIPE, stripe_api.url) as made:
        yield made


async def _get(stripe_api: StandInServer, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=stripe_api.url, auth=(STRIPE_RESTRICTED_KEY, "")) as h:
        response = await h.get(path, params=params)
        response.raise_for_status()
        return response.json()


async def test_products_are_created_once_with_their_price_and_repriced_on_change(
    contexts: Contexts, stripe_api: StandInServer
) -> None:
    ctx = contexts(EntityType.PRODUCT)
    batch = [_ticket(n) for n in range(5)]
    bad = _ticket(9)
    batch.append(OutRecord(bad.internal_id, {**bad.fields, "name": ""}, None, "v"))
    first = await spw.PRODUCTS.write(ctx, batch)
    assert [r.error_code is None for r in first] == [True] * 5 + [False]
    ids = [r.external_id for r in first[:5]]
    assert ids[0] == spw.product_id(ctx, "tt-0") and len(set(ids)) == 5

    # Resent after a lost answer (id map empty): the same products, updated, not doubled.
    again = await spw.PRODUCTS.write(ctx, batch[:5])
    assert [r.external_id for r in again] == ids
    listed = (await _get(stripe_api, "/v1/products", limit=100))["data"]
    assert sorted(p["id"] for p in listed) == sorted(ids)
    product = await _get(stripe_api, f"/v1/products/{ids[1]}")
    assert product["metadata"]["event_id"] == "ev-1"
    price = await _get(stripe_api, f"/v1/prices/{product['default_price']}")
    assert (price["unit_amount"], price["currency"]) == (2500, "usd")

    [same] = await spw.PRODUCTS.write(ctx, [_ticket(1, external_id=ids[1])])
    assert same.error_code is None
    assert (await _get(stripe_api, f"/v1/products/{ids[1]}"))["default_price"] == price["id"]
    [repriced] = await spw.PRODUCTS.write(ctx, [_ticket(1, price=3000, external_id=ids[1])])
    assert repriced.error_code is None
    now = await _get(stripe_api, f"/v1/products/{ids[1]}")
    assert now["default_price"] != price["id"]
    assert (await _get(stripe_api, f"/v1/prices/{now['default_price']}"))["unit_amount"] == 3000

    gone = await spw.PRODUCTS.delete(ctx, [ids[0], "tt_unknown"])
    assert [r.error_code for r in gone] == [None, None]
    assert (await _get(stripe_api, f"/v1/products/{ids[0]}"))["active"] is False
