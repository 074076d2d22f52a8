"""The readers (sync/readers/*.py) against the stand-ins over HTTP, through the service's token
keeper and guards: a first pull reads everything page by page, an incremental pull from the
cursor it left reads only what changed since (deletions flagged), and the records map back to
our fields with the provider's default mapping."""

from __future__ import annotations

from typing import Any

import pytest

from integration_service.domain import mappings as mp
from integration_service.domain.model import EntityType, Provider
from integration_service.sync import registry
from integration_service.sync.ports import InRecord, Reader, SyncContext
from integration_service.sync.readers import mailchimp as mcr
from integration_service.sync.readers import quickbooks as qbr
from integration_service.sync.readers import square as sqr
from integration_service.sync.readers import stripe as str_
from integration_service.sync.writers import mailchimp as mcw
from integration_service.sync.writers import quickbooks as qbw
from integration_service.sync.writers import square_customers as scw
from integration_service.sync.writers import stripe_products as spw
from meshdev.standins.stripe import StandInServer
from tests.integration.integration.support import Client
from tests.integration.integration.writer_support import mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def pull_all(
    reader: Reader, ctx: SyncContext, cursor: str | None
) -> tuple[list[InRecord], str | None]:
    """Page as the engine does: until a page is empty or brings no new cursor."""
    records: list[InRecord] = []
    for _ in range(100):
        page, following = await reader.pull(ctx, cursor)
        records += page
        if not page or following is None or following == cursor:
            return records, following or cursor
        cursor = following
    raise AssertionError("the reader never caught up")


def _buyer(provider: Provider, n: int, **extra: Any) -> Any:
    record = {"id": f"u{n}", "email": f"buyer{n}@example.com", "given_name": f"B{n}", **extra}
    return mapped(provider, EntityType.CUSTOMER, record)


def _ticket(provider: Provider, n: int, price: int = 2500, external_id: str | None = None) -> Any:
    record = {
        "id": f"tt-{n}",
        "name": f"Ticket {n}",
        "description": "GA",
        "price": {"amount_minor": price, "currency": "USD"},
    }
    return mapped(provider, EntityType.PRODUCT, record, external_id)


def test_every_reader_is_registered() -> None:
    registry.load()
    assert {
        (Provider.SQUARE, EntityType.CUSTOMER),
        (Provider.SQUARE, EntityType.PRODUCT),
        (Provider.QUICKBOOKS, EntityType.PRODUCT),
        (Provider.QUICKBOOKS, EntityType.CUSTOMER),
        (Provider.MAILCHIMP, EntityType.CUSTOMER),
        (Provider.STRIPE, EntityType.PRODUCT),
    } <= set(registry.READERS)


async def test_square_customers_incrementally(client: Client) -> None:
    api = client.app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api) as contexts:
        ctx = contexts(EntityType.CUSTOMER)
        buyers = [_buyer(Provider.SQUARE, n) for n in range(150)]
        written = [
            *await scw.CUSTOMERS.write(ctx, buyers[:100]),
            *await scw.CUSTOMERS.write(ctx, buyers[100:]),
        ]
        first, cursor = await pull_all(sqr.CUSTOMERS, ctx, None)
        assert len({r.external_id for r in first}) == 150  # two pages of 100
        ours = mp.apply_inbound(
            mp.DEFAULTS[(Provider.SQUARE, EntityType.CUSTOMER)], first[0].fields, currency="USD"
        )
        assert ours == {"given_name": "B0", "email": "buyer0@example.com", "id": "u0"}

        changed = mapped(
            Provider.SQUARE,
            EntityType.CUSTOMER,
            {"id": "u7", "email": "buyer7@example.com", "given_name": "Grace"},
            written[7].external_id,
        )
        await scw.CUSTOMERS.write(ctx, [changed])
        later, _cursor = await pull_all(sqr.CUSTOMERS, ctx, cursor)
        assert written[7].external_id in {r.external_id for r in later}
        assert [r.external_id for r in later] == [written[7].external_id]
        assert later[0].fields["given_name"] == "Grace"
        assert (await pull_all(sqr.CUSTOMERS, ctx, _cursor))[0] == []  # caught up


async def test_square_catalog_items_and_deletions(client: Client) -> None:
    from integration_service.sync.writers import square_catalog as sqw

    api = client.app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api) as contexts:
        ctx = contexts(EntityType.PRODUCT)
        written = await sqw.SquareCatalogWriter().write(
            ctx, [_ticket(Provider.SQUARE, n) for n in range(3)]
        )
        ids = [r.external_id for r in written]
        first, _ = await pull_all(sqr.CATALOG, ctx, None)
        assert sorted(r.external_id for r in first) == sorted(ids)
        ours = mp.apply_inbound(
            mp.DEFAULTS[(Provider.SQUARE, EntityType.PRODUCT)],
            next(r for r in first if r.external_id == ids[0]).fields,
            currency="USD",
        )
        assert ours["price"] == {"amount_minor": 2500, "currency": "USD"}  # type: ignore[index]
        assert ours["id"] == "tt-0"  # type: ignore[index]


async def test_quickbooks_items_first_in_pages_then_by_cdc(client: Client) -> None:
    api = client.app.settings.quickbooks_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_QUICKBOOKS, api) as contexts:
        ctx = contexts(EntityType.PRODUCT)
        written = await qbw.ITEMS.write(ctx, [_ticket(Provider.QUICKBOOKS, n) for n in range(5)])
        first, cursor = await pull_all(qbr.ITEMS, ctx, None)
        assert sorted(r.external_id for r in first) == sorted(str(r.external_id) for r in written)
        ours = mp.apply_inbound(
            mp.DEFAULTS[(Provider.QUICKBOOKS, EntityType.PRODUCT)], first[0].fields, currency="USD"
        )
        assert ours["price"] == {"amount_minor": 2500, "currency": "USD"}  # type: ignore[index]

        await qbw.ITEMS.write(
            ctx, [_ticket(Provider.QUICKBOOKS, 2, price=3000, external_id=written[2].external_id)]
        )
        later, _ = await pull_all(qbr.ITEMS, ctx, cursor)
        [item] = later  # only the change (what was read at the bound is not read again)
        assert item.external_id == written[2].external_id
        assert str(item.fields["UnitPrice"]) in ("30", "30.0", "30.00")
        assert (await pull_all(qbr.ITEMS, ctx, _))[0] == []  # caught up


async def test_mailchimp_members_since_last_changed(client: Client) -> None:
    async with writer_contexts(client, pb.PROVIDER_MAILCHIMP) as contexts:
        ctx = contexts(EntityType.CUSTOMER)
        await mcw.MEMBERS.write(
            ctx, [_buyer(Provider.MAILCHIMP, n, marketing_consent=True) for n in range(4)]
        )
        first, cursor = await pull_all(mcr.MEMBERS, ctx, None)
        assert len(first) == 4
        await mcw.MEMBERS.delete(ctx, [mcw.subscriber_hash("buyer1@example.com")])
        later, _ = await pull_all(mcr.MEMBERS, ctx, cursor)
        assert [(r.external_id, r.deleted) for r in later] == [
            (mcw.subscriber_hash("buyer1@example.com"), True)
        ]


async def test_stripe_products_with_their_prices(client: Client, stripe_api: StandInServer) -> None:
    async with writer_contexts(client, pb.PROVIDER_STRIPE, stripe_api.url) as contexts:
        ctx = contexts(EntityType.PRODUCT)
        await spw.PRODUCTS.write(ctx, [_ticket(Provider.STRIPE, n) for n in range(120)])
        first, cursor = await pull_all(str_.PRODUCTS, ctx, None)
        assert len(first) == 120 and cursor is None  # every run lists them all
        ours = mp.apply_inbound(
            mp.DEFAULTS[(Provider.STRIPE, EntityType.PRODUCT)], first[0].fields, currency="USD"
        )
        assert ours["price"] == {"amount_minor": 2500, "currency": "USD"}  # type: ignore[index]
