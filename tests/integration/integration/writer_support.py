"""SyncContexts for writer tests: a connection made by the OAuth dance (Stripe: a restricted
API key), calling the provider through the service's own TokenKeeper and guard, as the sync
engine does."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from integration_service.domain import mappings as mp
from integration_service.domain.model import SYSTEM, EntityType, Provider
from integration_service.store import connections as connections_store
from integration_service.sync.ports import OutRecord, SyncContext
from tests.integration.integration.support import VENUE, Client
from tickettoken.integration.v1 import integration_pb2 as pb

Contexts = Callable[[EntityType], SyncContext]
STRIPE_RESTRICTED_KEY = "rk_test_meshdev_venue_catalogue_0001"


@contextlib.asynccontextmanager
async def writer_contexts(
    client: Client, provider: int, api_base: str = ""
) -> AsyncIterator[Contexts]:
    if provider == pb.PROVIDER_STRIPE:
        request = pb.ConnectWithApiKeyRequest(
            idempotency_key=str(uuid.uuid4()),
            venue_id=VENUE,
            provider=provider,
            api_key=STRIPE_RESTRICTED_KEY,
        )
        made = (await client.stub.ConnectWithApiKey(request, metadata=client.md())).connection
    else:
        made = await client.dance(provider)
    app = client.app
    assert app.kit is not None
    kit = app.kit
    async with kit.db.acquire() as conn:
        connection = await connections_store.get(conn, uuid.UUID(made.id))
    assert connection is not None
    tokens = app.registrations[0].servicer.connections._tokens  # type: ignore[attr-defined]

    async def caller(fn: Any) -> Any:
        _, result = await tokens.call(connection, SYSTEM, "sync:test", fn)
        return result

    async with httpx.AsyncClient(timeout=10.0) as http:

        def make(entity: EntityType) -> SyncContext:
            return SyncContext(
                connection=connection,
                entity=entity,
                job_id=uuid.uuid4(),
                guard=kit.guards[connection.provider.value],
                caller=caller,
                api_base=connection.api_base or api_base,
                http=http,
            )

        yield make


def mapped(
    provider: Provider, entity: EntityType, record: dict[str, Any], external_id: str | None = None
) -> OutRecord:
    """A record through the provider's default mapping, as the engine hands it to a writer."""
    fields = mp.map_record([], provider, entity, record)
    assert isinstance(fields, dict), fields
    version = uuid.uuid5(uuid.NAMESPACE_OID, repr(sorted(fields.items()))).hex
    return OutRecord(str(record["id"]), fields, external_id, version)
