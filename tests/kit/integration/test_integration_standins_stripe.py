"""Stripe for the integration service's catalogue sync: the fast Stripe stand-in's products and
prices (meshdev.standins.stripe), reached through the official `stripe` SDK with a restricted key
as the integration service will connect a venue's Stripe account; and what localstripe (which
the payment service uses) can and cannot do for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import stripe

from meshdev.embedded import LocalStripe
from meshdev.standins.stripe import StandInServer, fast_app

RESTRICTED_KEY = "rk_test_meshdev_venue_catalogue"


@pytest.fixture
async def fast() -> AsyncIterator[StandInServer]:
    async with StandInServer(fast_app()) as server:
        yield server


def client(server: StandInServer | LocalStripe, key: str = RESTRICTED_KEY) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": server.url}, max_network_retries=0)


async def test_products_with_our_ids_prices_and_idempotent_creates(fast: StandInServer) -> None:
    api = client(fast)
    params: stripe.ProductService.CreateParams = {
        "id": "tt_evt_0001",
        "name": "Jazz night",
        "metadata": {"tt_event_id": "evt-0001", "venue": "v1"},
        "default_price_data": {"currency": "usd", "unit_amount": 2500},
    }
    product = await api.v1.products.create_async(params, {"idempotency_key": "sync-p-1"})
    replay = await api.v1.products.create_async(params, {"idempotency_key": "sync-p-1"})
    assert replay.id == product.id == "tt_evt_0001"
    assert isinstance(product.default_price, str)
    with pytest.raises(stripe.InvalidRequestError) as exists:
        await api.v1.products.create_async({"id": "tt_evt_0001", "name": "Again"})
    assert exists.value.code == "resource_already_exists"

    vip = await api.v1.prices.create_async(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": 9000,
            "lookup_key": "evt-0001-vip",
        }
    )
    assert (vip.unit_amount, vip.type, vip.product) == (9000, "one_time", product.id)
    prices = await api.v1.prices.list_async({"product": product.id})
    assert sorted(p.unit_amount or 0 for p in prices.data) == [2500, 9000]
    by_key = await api.v1.prices.list_async({"lookup_keys": ["evt-0001-vip"]})
    assert [p.id for p in by_key.data] == [vip.id]
    with pytest.raises(stripe.InvalidRequestError):
        await api.v1.prices.update_async(vip.id, {"unit_amount": 1})  # type: ignore[typeddict-unknown-key]
    archived = await api.v1.prices.update_async(vip.id, {"active": False})
    assert archived.active is False

    updated = await api.v1.products.update_async(
        product.id, {"name": "Jazz night (late)", "metadata": {"venue": "", "hall": "B"}}
    )
    assert updated.metadata.to_dict() == {"tt_event_id": "evt-0001", "hall": "B"}
    with pytest.raises(stripe.InvalidRequestError):
        await api.v1.products.delete_async(product.id)  # it has prices


async def test_product_lists_page_and_search_finds_by_metadata(fast: StandInServer) -> None:
    api = client(fast)
    for n in range(25):
        await api.v1.products.create_async(
            {"name": f"Show {n}", "metadata": {"tt_event_id": f"evt-{n:03d}"}}
        )
    first = await api.v1.products.list_async({"limit": 10})
    assert len(first.data) == 10 and first.has_more
    assert first.data[0].name == "Show 24"  # newest first, as Stripe lists
    seen = [p.name async for p in first.auto_paging_iter()]
    assert len(seen) == len(set(seen)) == 25
    found = await api.v1.products.search_async({"query": "metadata['tt_event_id']:'evt-007'"})
    assert [p.name for p in found.data] == ["Show 7"]


def test_localstripe_has_products_but_no_prices_and_refuses_restricted_keys(
    tmp_path: Path,
) -> None:
    with LocalStripe(tmp_path) as server:
        with pytest.raises(stripe.AuthenticationError):
            client(server).v1.products.list()
        secret = client(server, "sk_test_meshdev")
        product = secret.v1.products.create({"name": "Show"})
        assert [p.id for p in secret.v1.products.list().data] == [product.id]
        with pytest.raises(stripe.APIError):
            secret.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 1})
