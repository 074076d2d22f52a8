"""Issue 14's reader gaps, against the stand-ins over HTTP: a webhook that names the changed
records pulls just those (the readers' `fetch`); a Square item deleted at Square (which comes
back without its variation) tombstones our record; marketing consent pulled back is a bool;
Square inventory counts changed at Square are pulled incrementally into the mirror."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from integration_service.domain import mappings as mp
from integration_service.domain.model import EntityType, Provider
from integration_service.sync import registry
from integration_service.sync.ports import Fetcher
from integration_service.sync.readers import mailchimp as mcr
from integration_service.sync.readers import quickbooks as qbr
from integration_service.sync.readers import square as sqr
from integration_service.sync.readers import stripe as str_
from integration_service.sync.writers import mailchimp as mcw
from integration_service.sync.writers import quickbooks as qbw
from integration_service.sync.writers import square_customers as scw
from integration_service.sync.writers import square_inventory as siw
from integration_service.sync.writers import stripe_products as spw
from integration_service.sync.writers.square_catalog import SquareCatalogWriter
from integration_service.usecases.changes import ChangeCases
from meshdev.standins import square as sq
from meshdev.standins.square import DEV_MERCHANT_ID, SquareServer
from meshdev.standins.stripe import StandInServer
from tests.integration.integration.support import VENUE, Client, key, rows
from tests.integration.integration.test_readers import pull_all
from tests.integration.integration.test_sync import catalog, finished, ingest, start
from tests.integration.integration.writer_support import mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _buyer(provider: Provider, n: int, **extra: Any) -> Any:
    record = {"id": f"u{n}", "email": f"buyer{n}@example.com", "given_name": f"B{n}", **extra}
    return mapped(provider, EntityType.CUSTOMER, record)


def _ticket(provider: Provider, n: int) -> Any:
    record = {
        "id": f"tt-{n}",
        "name": f"Ticket {n}",
        "price": {"amount_minor": 2500, "currency": "USD"},
    }
    return mapped(provider, EntityType.PRODUCT, record)


async def _until(app: Any, query: str, *args: Any) -> list[dict[str, Any]]:
    for _ in range(400):  # the relay polls every half second; the pull takes a few calls
        found = await rows(app, query, *args)
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing for {query}")


async def test_a_webhook_naming_one_customer_retrieves_just_that_one(
    client: Client, square: SquareServer
) -> None:
    app = client.app
    api_base = app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api_base) as contexts:
        ctx = contexts(EntityType.CUSTOMER)
        # Two customers made while no webhook is configured: no pull reads them.
        assert all(
            r.error_code is None
            for r in await scw.CUSTOMERS.write(ctx, [_buyer(Provider.SQUARE, n) for n in (1, 2)])
        )
        searches = square.stats.calls["customers.search"]
        square.webhook_url = app.kit.http.local_url("/webhooks/square")  # type: ignore[union-attr]
        [made] = await scw.CUSTOMERS.write(ctx, [_buyer(Provider.SQUARE, 3)])
        assert made.error_code is None

    [job] = await _until(
        app,
        "SELECT j.id, e.only_ids FROM sync_jobs j JOIN sync_job_entities e ON e.job_id = j.id "
        "WHERE j.direction = 'PULL' AND j.status = 'SUCCEEDED'",
    )
    assert job["only_ids"] == [made.external_id]
    found = await rows(
        app, "SELECT internal_id, data::text AS data FROM mirror_records WHERE entity = 'CUSTOMER'"
    )
    assert [(r["internal_id"], json.loads(r["data"])) for r in found] == [
        ("u3", {"email": "buyer3@example.com", "given_name": "B3", "id": "u3"})
    ]
    # One bulk-retrieve of that id; no search (the cursor pull would have read all three).
    assert square.stats.calls["customers.bulk_retrieve"] == 1
    assert square.stats.calls["customers.search"] == searches
    [cursor] = await rows(
        app, "SELECT pull_cursor FROM sync_cursors WHERE direction = 'PULL' AND entity = 'CUSTOMER'"
    )
    assert cursor["pull_cursor"] is None  # the incremental cursor is left where it was


async def test_the_trigger_restricts_a_pull_only_to_named_records_of_a_known_type(
    client: Client,
) -> None:
    changes = ChangeCases(sync=client.app.registrations[0].servicer.sync)  # type: ignore[attr-defined]
    connection = uuid.UUID((await client.dance(pb.PROVIDER_SQUARE)).id)
    named = await changes.pull_changes(connection, Provider.SQUARE, EntityType.CUSTOMER, ["C1"])
    assert named is not None
    found = await rows(
        client.app,
        "SELECT entity, only_ids FROM sync_job_entities WHERE job_id = $1",
        named,
    )
    assert [(r["entity"], r["only_ids"]) for r in found] == [("CUSTOMER", ["C1"])]
    await _until(
        client.app,
        "SELECT 1 FROM sync_jobs WHERE id = $1 AND status NOT IN ('PENDING', 'RUNNING')",
        named,
    )
    # Ids without their type (the webhook did not say what changed): every pulled type, all.
    untyped = await changes.pull_changes(connection, Provider.SQUARE, None, ["X"])
    found = await rows(
        client.app, "SELECT entity, only_ids FROM sync_job_entities WHERE job_id = $1", untyped
    )
    assert found and all(r["only_ids"] is None for r in found)


async def test_every_reader_fetches_named_records(
    client: Client, square: SquareServer, stripe_api: StandInServer
) -> None:
    registry.load()
    assert all(isinstance(r, Fetcher) for r in registry.READERS.values())
    api = client.app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api) as contexts:
        ctx = contexts(EntityType.PRODUCT)
        written = await SquareCatalogWriter().write(
            ctx, [_ticket(Provider.SQUARE, n) for n in range(3)]
        )
        composite = [str(r.external_id) for r in written]
        [one] = await sqr.CATALOG.fetch(ctx, [composite[1]])
        assert (one.external_id, one.deleted) == (composite[1], False)
        assert one.fields["item_variation_data"]["sku"] == "tt-1"
        item = composite[2].split("/")[0]
        async with httpx.AsyncClient(base_url=square.url) as http:
            gone = await http.delete(
                f"/v2/catalog/object/{item}",
                headers={"Authorization": f"Bearer {sq.DEV_ACCESS_TOKEN}"},
            )
            assert gone.status_code == 200, gone.text
        [deleted] = await sqr.CATALOG.fetch(ctx, [composite[2]])
        assert (deleted.external_id, deleted.deleted) == (item, True)

    qb_api = client.app.settings.quickbooks_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_QUICKBOOKS, qb_api) as contexts:
        ctx = contexts(EntityType.CUSTOMER)
        made = await qbw.CUSTOMERS.write(ctx, [_buyer(Provider.QUICKBOOKS, n) for n in range(3)])
        wanted = str(made[1].external_id)
        [record, missing] = await qbr.CUSTOMERS.fetch(ctx, [wanted, "999999"])
        assert (record.external_id, record.deleted) == (wanted, False)
        assert record.fields["PrimaryEmailAddr"]["Address"] == "buyer1@example.com"
        assert (missing.external_id, missing.deleted) == ("999999", True)

    async with writer_contexts(client, pb.PROVIDER_MAILCHIMP) as contexts:
        ctx = contexts(EntityType.CUSTOMER)
        await mcw.MEMBERS.write(
            ctx, [_buyer(Provider.MAILCHIMP, n, marketing_consent=True) for n in range(3)]
        )
        member = mcw.subscriber_hash("buyer2@example.com")
        [found, nobody] = await mcr.MEMBERS.fetch(ctx, [member, "0" * 32])
        assert (found.external_id, found.deleted) == (member, False)
        ours = mp.apply_inbound(
            mp.DEFAULTS[(Provider.MAILCHIMP, EntityType.CUSTOMER)], found.fields, currency="USD"
        )
        assert ours == {
            "email": "buyer2@example.com",
            "marketing_consent": True,
            "given_name": "B2",
        }
        assert (nobody.external_id, nobody.deleted) == ("0" * 32, True)

    async with writer_contexts(client, pb.PROVIDER_STRIPE, stripe_api.url) as contexts:
        ctx = contexts(EntityType.PRODUCT)
        made = await spw.PRODUCTS.write(ctx, [_ticket(Provider.STRIPE, n) for n in range(2)])
        product = str(made[0].external_id)
        [got, none] = await str_.PRODUCTS.fetch(ctx, [product, "prod_missing"])
        assert (got.external_id, got.deleted) == (product, False)
        assert got.fields["default_price_data"] == {"unit_amount": 2500, "currency": "usd"}
        assert (none.external_id, none.deleted) == ("prod_missing", True)


async def test_an_item_deleted_at_square_tombstones_our_record(
    client: Client, square: SquareServer
) -> None:
    connection = await client.dance(pb.PROVIDER_SQUARE)
    await ingest(client, catalog(3))
    pushed = (await finished(client, (await start(client, connection.id)).id))[-1].job
    assert pushed.records_succeeded == 3
    [mapped_row] = await rows(
        client.app,
        "SELECT external_id FROM id_map WHERE entity = 'PRODUCT' AND internal_id = 'tt-1'",
    )
    item = str(mapped_row["external_id"]).split("/")[0]  # the catalog writer keeps item/variation
    async with httpx.AsyncClient(base_url=square.url) as http:
        gone = await http.delete(
            f"/v2/catalog/object/{item}",
            headers={"Authorization": f"Bearer {sq.DEV_ACCESS_TOKEN}"},
        )
        assert gone.status_code == 200, gone.text

    pulled = await client.stub.StartSync(
        pb.StartSyncRequest(
            idempotency_key=key(),
            connection_id=connection.id,
            entity_types=[pb.ENTITY_TYPE_PRODUCT],
            direction=pb.SYNC_DIRECTION_PULL,
            mode=pb.SYNC_MODE_INCREMENTAL,
        ),
        metadata=client.md(),
    )
    done = (await finished(client, pulled.job.id))[-1].job
    assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED, done
    mirror = {
        r["internal_id"]: r["deleted"]
        for r in await rows(
            client.app, "SELECT internal_id, deleted FROM mirror_records WHERE entity = 'PRODUCT'"
        )
    }
    assert mirror == {"tt-0": False, "tt-1": True, "tt-2": False}
    left = await rows(client.app, "SELECT internal_id FROM id_map WHERE entity = 'PRODUCT'")
    assert sorted(r["internal_id"] for r in left) == ["tt-0", "tt-2"]


async def test_square_inventory_counts_pulled_incrementally(
    client: Client, square: SquareServer
) -> None:
    api = client.app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api) as contexts:
        connection_id = contexts(EntityType.PRODUCT).connection.id
        await SquareCatalogWriter().write(
            contexts(EntityType.PRODUCT), [_ticket(Provider.SQUARE, n) for n in range(3)]
        )
        ctx = contexts(EntityType.INVENTORY)
        levels = [
            mapped(
                Provider.SQUARE,
                EntityType.INVENTORY,
                {"id": f"tt-{n}", "product_id": f"tt-{n}", "remaining": 10 + n},
            )
            for n in range(3)
        ]
        written = await siw.INVENTORY.write(ctx, levels)
        variations = [str(r.external_id) for r in written]
        first, cursor = await pull_all(sqr.INVENTORY, ctx, None)
        assert sorted((r.external_id, r.fields["quantity"]) for r in first) == sorted(
            (v, str(10 + n)) for n, v in enumerate(variations)
        )
        # At Square, one count changes: the next pull reads only that one.
        square.clock.advance(2)
        location = next(iter(square.merchants[DEV_MERCHANT_ID].counts))[1]
        async with httpx.AsyncClient(base_url=square.url) as http:
            answer = await http.post(
                "/v2/inventory/changes/batch-create",
                json={
                    "idempotency_key": key(),
                    "changes": [
                        {
                            "type": "PHYSICAL_COUNT",
                            "physical_count": {
                                "catalog_object_id": variations[1],
                                "location_id": location,
                                "state": "IN_STOCK",
                                "quantity": "4",
                                "occurred_at": "2026-01-01T00:00:00Z",
                            },
                        }
                    ],
                },
                headers={"Authorization": f"Bearer {sq.DEV_ACCESS_TOKEN}"},
            )
            assert answer.status_code == 200, answer.text
        later, cursor = await pull_all(sqr.INVENTORY, ctx, cursor)
        assert [(r.external_id, r.fields["quantity"]) for r in later] == [(variations[1], "4")]
        assert (await pull_all(sqr.INVENTORY, ctx, cursor))[0] == []  # caught up

    # Through the engine: the counts land in the mirror under our ticket type ids (the id map
    # the inventory writer keeps), remaining as an integer.
    async with client.app.kit.db.acquire() as conn:  # type: ignore[union-attr]
        for n, variation in enumerate(variations):
            await conn.execute(
                "INSERT INTO id_map (connection_id, entity, internal_id, external_id, "
                "content_hash) VALUES ($1, 'INVENTORY', $2, $3, '')",
                connection_id,
                f"tt-{n}",
                variation,
            )
    job = await client.stub.StartSync(
        pb.StartSyncRequest(
            idempotency_key=key(),
            connection_id=str(connection_id),
            entity_types=[pb.ENTITY_TYPE_INVENTORY],
            direction=pb.SYNC_DIRECTION_PULL,
            mode=pb.SYNC_MODE_FULL,
        ),
        metadata=client.md(),
    )
    done = (await finished(client, job.job.id))[-1].job
    assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED, done
    mirror = {
        r["internal_id"]: json.loads(r["data"])["remaining"]
        for r in await rows(
            client.app,
            "SELECT internal_id, data::text AS data FROM mirror_records "
            "WHERE venue_id = $1 AND entity = 'INVENTORY'",
            VENUE,
        )
    }
    assert mirror == {"tt-0": 10, "tt-1": 4, "tt-2": 12}


def test_a_mailchimp_webhook_names_the_member_by_subscriber_hash() -> None:
    from datetime import UTC, datetime
    from urllib.parse import urlencode

    from integration_service.domain import webhooks as wh

    body = urlencode(
        {
            "type": "profile",
            "fired_at": "2026-05-01 10:00:00",
            "data[id]": "8a25ff1d98",
            "data[email]": "Ada@Example.com",
        }
    ).encode()
    event = wh.verify_mailchimp(
        body,
        given_secret="s3cret",
        stored_digest=wh.secret_digest("s3cret"),
        now=datetime(2026, 5, 1, 10, 0, 5, tzinfo=UTC),
        max_age_s=60,
    )
    # What the members writer, reader and fetch key a member by.
    assert event.external_ids == (mcw.subscriber_hash("ada@example.com"),)


def test_square_inventory_and_stripe_price_webhooks_name_the_synced_records() -> None:
    import json as _json
    import time
    from datetime import UTC, datetime

    from integration_service.domain import webhooks as wh

    now = datetime.now(UTC)
    body = _json.dumps(
        {
            "merchant_id": "M1",
            "type": "inventory.count.updated",
            "event_id": "e1",
            "created_at": now.isoformat(),
            "data": {
                "type": "inventory",
                "id": "not-a-record",
                "object": {
                    "inventory_counts": [
                        {"catalog_object_id": "VAR1", "quantity": "3"},
                        {"catalog_object_id": "VAR1", "quantity": "3"},
                        {"catalog_object_id": "VAR2", "quantity": "1"},
                    ]
                },
            },
        }
    ).encode()
    url = "https://tt.example/webhooks/square"
    event = wh.verify_square(
        body,
        {wh.SQUARE_HEADER: wh.square_signature("k", url, body)},
        notification_url=url,
        signature_key="k",
        now=now,
        max_age_s=60,
    )
    assert (event.entity_type, event.external_ids) == (EntityType.INVENTORY, ("VAR1", "VAR2"))

    stamp = int(time.time())
    price = _json.dumps(
        {
            "id": "evt_1",
            "type": "price.updated",
            "created": stamp,
            "data": {"object": {"id": "price_1", "object": "price", "product": "tt_abc"}},
        }
    ).encode()
    got = wh.verify_stripe(
        price,
        {wh.STRIPE_HEADER: f"t={stamp},v1={wh.stripe_signature('whsec', stamp, price)}"},
        secret="whsec",
        now=datetime.fromtimestamp(stamp, UTC),
        tolerance_s=300,
    )
    assert (got.entity_type, got.external_ids) == (EntityType.PRODUCT, ("tt_abc",))
