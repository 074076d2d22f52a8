"""SetFieldMappings and GetFieldMappings.

A connection's mappings are one versioned set: SetFieldMappings checks the whole new set
against the provider's fields (`domain.mappings.validate`: nothing is stored when any mapping is
wrong) and replaces the stored one, optionally only when the stored version is the expected one.
GetFieldMappings answers what syncs use: per entity type the stored mappings, else the
provider's default. Venue admins reach only their venues' connections (others are "not found").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from integration_service.domain import catalog
from integration_service.domain import mappings as mapping_rules
from integration_service.domain.errors import (
    ConnectionDisconnected,
    ConnectionNotFound,
    InvalidMappings,
    MappingsVersionMismatch,
)
from integration_service.domain.mappings import FieldMapping
from integration_service.domain.model import Actor, Connection, ConnectionStatus, EntityType
from integration_service.store import connections as connections_store
from integration_service.store import mappings as mappings_store
from meshkit.db import Database


@dataclass(frozen=True, slots=True)
class MappingSet:
    mappings: tuple[FieldMapping, ...]
    version: int
    """0 when none was ever stored."""
    defaults: bool
    """True when every mapping shown is a provider default (none stored for those types)."""


class MappingCases:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    @staticmethod
    def _visible(actor: Actor, found: Connection | None) -> Connection:
        if found is None or not actor.manages(found.venue_id):
            raise ConnectionNotFound()
        return found

    async def set(
        self,
        actor: Actor,
        connection_id: uuid.UUID,
        mappings: tuple[FieldMapping, ...],
        *,
        expected_version: int = 0,
    ) -> MappingSet:
        async with self._db.transaction() as conn:
            connection = self._visible(actor, await connections_store.get(conn, connection_id))
            if connection.status is ConnectionStatus.DISCONNECTED:
                raise ConnectionDisconnected()
            violations = mapping_rules.validate(mappings, connection.provider)
            if violations:
                raise InvalidMappings(violations)
            stored = await mappings_store.get(conn, connection_id, lock=True)
            if expected_version and expected_version != stored.version:
                raise MappingsVersionMismatch(expected_version, stored.version)
            if stored.version and stored.mappings == mappings:
                return MappingSet(stored.mappings, stored.version, defaults=False)
            version = stored.version + 1
            await mappings_store.put(
                conn, connection_id, mappings, version=version, updated_by=actor.subject
            )
        return MappingSet(mappings, version, defaults=False)

    async def get(
        self, actor: Actor, connection_id: uuid.UUID, entity: EntityType | None = None
    ) -> MappingSet:
        async with self._db.acquire() as conn:
            connection = self._visible(actor, await connections_store.get(conn, connection_id))
            stored = await mappings_store.get(conn, connection_id)
        provider = connection.provider
        synced = [c.entity_type for c in catalog.spec(provider).capabilities]
        entities = [e for e in synced if entity is None or e is entity]
        shown: list[FieldMapping] = []
        defaulted = True
        for e in entities:
            own = mapping_rules.for_entity(stored.mappings, e)
            defaulted = defaulted and not own
            shown.extend(own or mapping_rules.DEFAULTS.get((provider, e), ()))
        return MappingSet(tuple(shown), stored.version, defaults=defaulted)
