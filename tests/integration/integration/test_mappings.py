"""SetFieldMappings / GetFieldMappings through the real service: the provider defaults until a
set is stored, a stored set per entity type with the defaults for the others, versions and
optimistic concurrency, idempotent replays, a bad set refused with field violations and nothing
stored, and another venue's connection out of reach."""

from __future__ import annotations

import grpc
import pytest

from meshdev.testing.rpc import reason, violations
from tests.integration.integration.support import OTHER_VENUE, Client, key, rows
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PRODUCT, CUSTOMER = pb.ENTITY_TYPE_PRODUCT, pb.ENTITY_TYPE_CUSTOMER

CUSTOM_ITEMS = [
    pb.FieldMapping(
        entity_type=PRODUCT,
        internal_field="event.name",
        external_field="Name",
        transform=pb.FIELD_TRANSFORM_UPPERCASE,
        required=True,
    ),
    pb.FieldMapping(
        entity_type=PRODUCT,
        internal_field="price",
        external_field="UnitPrice",
        transform=pb.FIELD_TRANSFORM_MINOR_UNITS_TO_DECIMAL,
    ),
    pb.FieldMapping(
        entity_type=PRODUCT,
        external_field="IncomeAccountRef.value",
        transform=pb.FIELD_TRANSFORM_CONSTANT,
        constant_value="2",
    ),
    pb.FieldMapping(
        entity_type=PRODUCT,
        internal_field="price.currency",
        external_field="Description",
        transform=pb.FIELD_TRANSFORM_LOOKUP,
        lookup={"USD": "US dollars"},
        default_value="other currency",
    ),
]


def _set(
    connection_id: str, mappings: list[pb.FieldMapping], **extra: int
) -> pb.SetFieldMappingsRequest:
    return pb.SetFieldMappingsRequest(
        idempotency_key=key(), connection_id=connection_id, mappings=mappings, **extra
    )


async def test_defaults_until_a_set_is_stored_then_the_stored_set_per_entity(
    client: Client,
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    md = client.md()
    first = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id), metadata=md
    )
    assert (first.version, first.defaults) == (0, True)
    assert {m.entity_type for m in first.mappings} == {
        PRODUCT,
        CUSTOMER,
        pb.ENTITY_TYPE_PAYMENT,
        pb.ENTITY_TYPE_REFUND,
    }
    receipt_date = next(m for m in first.mappings if m.external_field == "TxnDate")
    assert receipt_date.transform == pb.FIELD_TRANSFORM_DATE_FORMAT
    assert receipt_date.date_format == "%Y-%m-%d"

    request = _set(connection.id, CUSTOM_ITEMS)
    stored = await client.stub.SetFieldMappings(request, metadata=md)
    assert stored.version == 1 and list(stored.mappings) == CUSTOM_ITEMS
    replay = await client.stub.SetFieldMappings(request, metadata=md)
    assert replay == stored
    same = await client.stub.SetFieldMappings(_set(connection.id, CUSTOM_ITEMS), metadata=md)
    assert same.version == 1  # an unchanged set is not a change

    products = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id, entity_type=PRODUCT), metadata=md
    )
    assert (list(products.mappings), products.version, products.defaults) == (
        CUSTOM_ITEMS,
        1,
        False,
    )
    customers = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id, entity_type=CUSTOMER), metadata=md
    )
    assert customers.defaults and customers.version == 1
    assert customers.mappings[0].external_field == "DisplayName"

    [row] = await rows(
        client.app,
        "SELECT version, updated_by FROM field_mappings WHERE connection_id = $1::uuid",
        connection.id,
    )
    assert row == {"version": 1, "updated_by": "venue-admin-1"}


async def test_expected_version_guards_concurrent_edits(client: Client) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    md = client.md()
    await client.stub.SetFieldMappings(_set(connection.id, CUSTOM_ITEMS), metadata=md)
    changed = CUSTOM_ITEMS[:3]
    second = await client.stub.SetFieldMappings(
        _set(connection.id, changed, expected_version=1), metadata=md
    )
    assert second.version == 2
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await client.stub.SetFieldMappings(
            _set(connection.id, CUSTOM_ITEMS, expected_version=1), metadata=md
        )
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(stale.value) == "FIELD_MAPPINGS_VERSION_MISMATCH"
    now = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id, entity_type=PRODUCT), metadata=md
    )
    assert (list(now.mappings), now.version) == (changed, 2)


async def test_a_bad_set_is_refused_with_field_violations_and_nothing_is_stored(
    client: Client,
) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    md = client.md()
    bad = [
        pb.FieldMapping(entity_type=PRODUCT, internal_field="nmae", external_field="Name"),
        pb.FieldMapping(entity_type=PRODUCT, internal_field="price", external_field="UnitPrice"),
        pb.FieldMapping(entity_type=PRODUCT, internal_field="name", external_field="Colour"),
        pb.FieldMapping(
            entity_type=pb.ENTITY_TYPE_INVENTORY, internal_field="remaining", external_field="Qty"
        ),
        pb.FieldMapping(
            entity_type=PRODUCT,
            external_field="IncomeAccountRef.value",
            transform=pb.FIELD_TRANSFORM_CONSTANT,
            constant_value="1",
        ),
        pb.FieldMapping(
            entity_type=PRODUCT,
            internal_field="event.starts_at",
            external_field="Sku",
            transform=pb.FIELD_TRANSFORM_DATE_FORMAT,
            date_format="%s",
        ),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.SetFieldMappings(_set(connection.id, bad), metadata=md)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(refused.value) == "INVALID_FIELD_MAPPINGS"
    assert [f for f, _ in violations(refused.value)] == [
        "mappings[0].internal_field",
        "mappings[1].external_field",
        "mappings[2].external_field",
        "mappings[3].entity_type",
        "mappings[5].date_format",
    ]
    assert await rows(client.app, "SELECT * FROM field_mappings") == []


async def test_another_venues_connection_is_not_found(client: Client) -> None:
    connection = await client.dance(pb.PROVIDER_QUICKBOOKS)
    outsider = client.md("venue-admin-2", (OTHER_VENUE,))
    for call in (
        client.stub.GetFieldMappings(
            pb.GetFieldMappingsRequest(connection_id=connection.id), metadata=outsider
        ),
        client.stub.SetFieldMappings(_set(connection.id, CUSTOM_ITEMS), metadata=outsider),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as hidden:
            await call
        assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
    admin = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id), metadata=client.admin()
    )
    assert admin.defaults
