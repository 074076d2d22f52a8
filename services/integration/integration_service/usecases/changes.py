"""A provider told us (a verified webhook, `ProviderChangeReceived`) that records changed:
queue an incremental PULL of the changed entity type on that connection (every type the
provider pulls when the webhook does not say which). The incremental cursor reads only the
records changed since the last pull. When the webhook names the changed records (its
external ids) and says their type, the pull reads just those (the job's `only_ids`, read by the
reader's `fetch`: Square batch-retrieve, QuickBooks query by Id, Mailchimp member, Stripe
product) and leaves the incremental cursor where it is. A connection that is no longer
CONNECTED, or whose provider pulls nothing of that type, pulls nothing. A pull already running
answers for it: its reader reads up to the provider's newest change.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from integration_service.domain import catalog
from integration_service.domain.model import Direction, EntityType, Provider
from integration_service.usecases.sync import SYSTEM_ADMIN, SyncCases


class ChangeCases:
    def __init__(self, *, sync: SyncCases) -> None:
        self._sync = sync

    @staticmethod
    def pullable(provider: Provider, entity: EntityType | None) -> list[EntityType]:
        pulled = [
            c.entity_type
            for c in catalog.spec(provider).capabilities
            if Direction.PULL in c.directions
        ]
        return [e for e in pulled if entity is None or e is entity]

    async def pull_changes(
        self,
        connection_id: uuid.UUID,
        provider: Provider,
        entity: EntityType | None,
        external_ids: Sequence[str] = (),
    ) -> uuid.UUID | None:
        """The queued (or running) pull job; None when there is nothing to pull."""
        entities = self.pullable(provider, entity)
        if not entities:
            return None
        only = None
        if entity is not None and external_ids:
            only = {entity.value: sorted({str(i) for i in external_ids if i})}
        job = await self._sync.start(
            SYSTEM_ADMIN,
            connection_id,
            entities=entities,
            direction=Direction.PULL,
            mode="INCREMENTAL",
            only_ids=only,
        )
        return job.id
