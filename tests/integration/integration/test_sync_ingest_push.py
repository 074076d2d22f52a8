"""Ingest pushes on its own (issue 14): a venue's catalogue and remaining inventory reach its
connected tools with no StartSync — IngestCatalog / IngestInventory queue an incremental PUSH
per connection whose provider writes that entity, as RecordTransaction does — against the
Square stand-in over HTTP, the service in-process on real Postgres and Redis, no schedule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from integration_service.domain import catalog as provider_catalog
from integration_service.domain.model import Direction
from integration_service.sync import registry
from meshdev.standins.square import DEV_MERCHANT_ID, SquareServer
from meshkit.server import App
from tests.integration.integration.support import VENUE, Client, key, quiet, rows
from tests.integration.integration.test_sync import catalog, ingest, square_connection
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def jobs(app: App) -> list[dict[str, object]]:
    return await rows(
        app,
        "SELECT j.id, j.mode, j.direction, j.status, j.requested_by, j.records_succeeded, "
        "array_agg(e.entity ORDER BY e.entity) AS entities FROM sync_jobs j "
        "JOIN sync_job_entities e ON e.job_id = j.id GROUP BY j.id ORDER BY j.created_at",
    )


async def inventory(client: Client, levels: dict[str, int]) -> pb.IngestInventoryResponse:
    return await client.stub.IngestInventory(
        pb.IngestInventoryRequest(
            idempotency_key=key(),
            venue_id=VENUE,
            levels=[pb.InventoryLevel(ticket_type_id=t, remaining=n) for t, n in levels.items()],
        ),
        metadata=client.md(),
    )


def square_counts(square: SquareServer) -> dict[str, Decimal]:
    """In-stock counts at Square by the SKU (our ticket type id) of their variation."""
    merchant = square.merchants[DEV_MERCHANT_ID]
    sku = {
        v["id"]: v["item_variation_data"]["sku"] for v in square.live_objects(kind="ITEM_VARIATION")
    }
    return {
        sku[object_id]: Decimal(count["quantity"])
        for (object_id, _location, state), count in merchant.counts.items()
        if state == "IN_STOCK"
    }


def test_every_entity_a_provider_pushes_has_a_writer() -> None:
    """What `push_changes` relies on: a provider that pushes an entity type has its writer."""
    registry.load()
    pushed = {
        (provider, c.entity_type)
        for provider, spec in provider_catalog.CATALOG.items()
        for c in spec.capabilities
        if Direction.PUSH in c.directions
    }
    assert pushed == set(registry.WRITERS)


async def test_an_ingested_catalogue_reaches_square_once_without_a_start_sync(
    client: Client, square: SquareServer
) -> None:
    await square_connection(client)
    answer = await ingest(client, catalog(30, per_event=10))
    assert answer.changed_count == 30
    queued = await jobs(client.app)
    assert len(queued) == 1  # queued by the ingest itself, before it answered
    await quiet(client.app)

    [job] = await jobs(client.app)
    assert (job["mode"], job["direction"], job["entities"]) == ("INCREMENTAL", "PUSH", ["PRODUCT"])
    assert (job["status"], job["records_succeeded"]) == ("SUCCEEDED", 30)
    refs = square.catalog_refs()
    assert all(refs[f"item-tt-{i}"] == 1 and refs[f"tt-{i}"] == 1 for i in range(30))
    assert len(square.live_objects(kind="ITEM")) == 30
    assert square.duplicates() == {}
    assert square.stats.rate_limited == 0

    # The same catalogue again changes nothing in the mirror, and queues nothing.
    calls = square.stats.calls["catalog.batch_upsert"]
    again = await ingest(client, catalog(30, per_event=10))
    assert (again.changed_count, again.unchanged_count) == (0, 30)
    assert len(await jobs(client.app)) == 1
    assert square.stats.calls["catalog.batch_upsert"] == calls

    # One changed price: pushed on its own, only that record, as an update of the same item.
    changed = await ingest(client, catalog(1, price=3100, start=4, per_event=10))
    assert changed.changed_count == 1
    await quiet(client.app)
    later = await jobs(client.app)
    assert len(later) == 2
    assert (later[1]["status"], later[1]["records_succeeded"]) == ("SUCCEEDED", 1)
    prices = {
        v["item_variation_data"]["sku"]: v["item_variation_data"]["price_money"]["amount"]
        for v in square.live_objects(kind="ITEM_VARIATION")
    }
    assert (prices["tt-3"], prices["tt-4"], prices["tt-5"]) == (2500, 3100, 2500)
    assert len(square.live_objects(kind="ITEM")) == 30
    assert square.duplicates() == {}


async def test_ingested_inventory_reaches_square_as_counts(
    client: Client, square: SquareServer
) -> None:
    await square_connection(client)
    await ingest(client, catalog(3))
    await quiet(client.app)  # the ticket types are Square items first

    answer = await inventory(client, {"tt-0": 40, "tt-1": 7, "tt-2": 0})
    assert answer.changed_count == 3
    await quiet(client.app)
    queued = await jobs(client.app)
    assert [(j["entities"], j["status"]) for j in queued] == [
        (["PRODUCT"], "SUCCEEDED"),
        (["INVENTORY"], "SUCCEEDED"),
    ]
    assert square_counts(square) == {"tt-0": Decimal(40), "tt-1": Decimal(7), "tt-2": Decimal(0)}

    # The same counts again queue nothing; a sale's new count goes on its own.
    again = await inventory(client, {"tt-0": 40, "tt-1": 7, "tt-2": 0})
    assert again.changed_count == 0
    assert len(await jobs(client.app)) == 2
    await inventory(client, {"tt-0": 39})
    await quiet(client.app)
    assert len(await jobs(client.app)) == 3
    assert square_counts(square)["tt-0"] == Decimal(39)


async def test_nothing_is_queued_without_a_connection_that_writes_the_entity(
    client: Client,
) -> None:
    answer = await ingest(client, catalog(5))
    assert answer.changed_count == 5
    assert await jobs(client.app) == []  # no connection at all

    # Mailchimp takes customers only: neither products nor inventory go there.
    await client.dance(pb.PROVIDER_MAILCHIMP)
    assert (await ingest(client, catalog(5, price=900))).changed_count == 5
    assert (await inventory(client, {"tt-0": 12})).changed_count == 1
    assert await jobs(client.app) == []
