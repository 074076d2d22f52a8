"""integration's own event relay: `ProviderChangeReceived` (staged with a verified webhook's
inbox row) → an incremental PULL of what changed (`usecases.changes`). The service's other
events (connection failed / recovered) have no route here: delivered as no-ops."""

from __future__ import annotations

import uuid
from typing import Any

from integration_service.domain.errors import NotFound, Refused
from integration_service.domain.model import EntityType
from integration_service.usecases.changes import ChangeCases
from integration_service.usecases.events import PROVIDERS
from meshkit.routing import Delivery, Route
from tickettoken.integration.v1 import events_pb2 as ev
from tickettoken.integration.v1 import integration_pb2 as pb

PULL_CHANGES = "integration.pull_changes"
RELAY = "integration"
_PROVIDER_OF = {v: k for k, v in PROVIDERS.items()}


def routes(changes: ChangeCases) -> list[Route[Any]]:
    async def pull(event: ev.ProviderChangeReceived, delivery: Delivery) -> None:
        provider = _PROVIDER_OF.get(event.provider)
        if provider is None:
            delivery.skip("unknown provider")
            return
        entity = None
        if event.entity_type:
            entity = EntityType(pb.EntityType.Name(event.entity_type).removeprefix("ENTITY_TYPE_"))
        try:
            job = await changes.pull_changes(
                uuid.UUID(event.connection_id), provider, entity, list(event.external_ids)
            )
        except (Refused, NotFound) as refused:  # e.g. no longer CONNECTED, or gone
            delivery.skip(refused.message)
            return
        if job is None:
            delivery.skip(f"{provider.value} pulls nothing of this kind")

    return [Route(ev.ProviderChangeReceived, PULL_CHANGES, pull)]
