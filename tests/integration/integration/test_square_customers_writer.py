"""The Square customers writer (sync/writers/square_customers.py) against the Square stand-in
over HTTP, through the service's token keeper and guard: bulk-create once per record even when
resent, or resent with changed content (the first customer found by its reference id and
updated), bulk-update, an address Square refuses failing alone, bulk-delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from integration_service.domain.model import EntityType, Provider
from integration_service.sync.ports import OutRecord
from integration_service.sync.writers import square_customers as scw
from meshdev.standins.square import SquareServer
from tests.integration.integration.support import Client
from tests.integration.integration.writer_support import Contexts, mapped, writer_contexts
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _buyer(n: int, external_id: str | None = None, **extra: Any) -> OutRecord:
    record = {"id": f"u{n}", "email": f"Buyer{n}@Example.com", "given_name": f"Buyer {n}"}
    return mapped(Provider.SQUARE, EntityType.CUSTOMER, {**record, **extra}, external_id)


@pytest.fixture
async def contexts(client: Client) -> AsyncIterator[Contexts]:
    api_base = client.app.settings.square_api_base  # type: ignore[attr-defined]
    async with writer_contexts(client, pb.PROVIDER_SQUARE, api_base) as made:
        yield made


async def test_customers_are_created_once_updated_and_deleted(
    contexts: Contexts, square: SquareServer
) -> None:
    ctx = contexts(EntityType.CUSTOMER)
    batch = [_buyer(n) for n in range(3)]
    bad = _buyer(9)
    batch.append(OutRecord(bad.internal_id, {**bad.fields, "email_address": "nope"}, None, "v"))
    first = await scw.CUSTOMERS.write(ctx, batch)
    assert [r.error_code for r in first] == [None, None, None, "square_invalid_email_address"]
    ids = [r.external_id for r in first[:3]]

    # Resent unchanged (a lost answer), then resent changed before our id map knew the id.
    again = await scw.CUSTOMERS.write(ctx, batch[:3])
    assert [r.external_id for r in again] == ids
    [changed] = await scw.CUSTOMERS.write(ctx, [_buyer(1, family_name="Lovelace")])
    assert (changed.external_id, changed.error_code) == (ids[1], None)
    assert square.duplicates() == {}
    live = {c["reference_id"]: c for c in square.live_customers()}
    assert sorted(live) == ["u0", "u1", "u2"]
    assert live["u1"]["family_name"] == "Lovelace"
    assert live["u0"]["email_address"] == "buyer0@example.com"

    [updated] = await scw.CUSTOMERS.write(ctx, [_buyer(2, ids[2], given_name="Grace")])
    assert (updated.external_id, updated.error_code) == (ids[2], None)
    assert {c["reference_id"]: c for c in square.live_customers()}["u2"]["given_name"] == "Grace"

    gone = await scw.CUSTOMERS.delete(ctx, [ids[0], ids[0]])
    assert [r.error_code for r in gone] == [None, None]
    assert sorted(c["reference_id"] for c in square.live_customers()) == ["u1", "u2"]
