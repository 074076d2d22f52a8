"""A provider's change pulls itself in: a verified Square webhook (customer.created, sent by the
stand-in when a customer is made there) is staged as ProviderChangeReceived, integration's relay
queues an incremental PULL of customers on that connection, and the engine reads the customer
into the mirror (our fields through the default mapping)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.writers import square_customers as scw
from meshdev.standins.square import SquareServer
from tests.integration.integration.support import Client, rows
from tests.integration.integration.writer_support import mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_a_square_webhook_pulls_the_changed_customers(
    client: Client, square: SquareServer
) -> None:
    app = client.app
    square.webhook_url = app.kit.http.local_url("/webhooks/square")  # type: ignore[union-attr]
    api_base = app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api_base) as contexts:
        buyer = {"id": "u1", "email": "ada@example.com", "given_name": "Ada"}
        [made] = await scw.CUSTOMERS.write(
            contexts(EntityType.CUSTOMER), [mapped(Provider.SQUARE, EntityType.CUSTOMER, buyer)]
        )
        assert made.error_code is None

    found: list[dict[str, Any]] = []
    for _ in range(400):  # the relay polls every half second; the pull takes a few calls
        found = await rows(
            app,
            "SELECT internal_id, data::text AS data, origin FROM mirror_records "
            "WHERE entity = 'CUSTOMER'",
        )
        if found:
            break
        await asyncio.sleep(0.05)
    [record] = found
    assert record["internal_id"] == "u1"  # our id, read back from Square's reference_id
    assert json.loads(record["data"]) == {
        "email": "ada@example.com",
        "given_name": "Ada",
        "id": "u1",
    }
    [job] = await rows(app, "SELECT direction, mode, requested_by FROM sync_jobs")
    assert (job["direction"], job["mode"]) == ("PULL", "INCREMENTAL")
