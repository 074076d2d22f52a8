"""Errors of the sync RPCs (mapped to gRPC by their base classes in api/errors.py)."""

from __future__ import annotations

from integration_service.domain.errors import InvalidInput, NotFound, Refused, Violation


class SyncJobNotFound(NotFound):
    reason = "SYNC_JOB_NOT_FOUND"

    def __init__(self) -> None:
        super().__init__("no such sync job")


class EntityNotSynced(InvalidInput):
    """StartSync / SetSyncSchedule asked for an entity type or direction the provider does not
    sync."""

    reason = "ENTITY_NOT_SYNCED"

    def __init__(self, field: str, description: str) -> None:
        super().__init__([Violation(field, description)])


class ConnectionNotSyncable(Refused):
    reason = "CONNECTION_NOT_SYNCABLE"

    def __init__(self, status: str) -> None:
        super().__init__(
            f"the connection is {status}: only a CONNECTED connection syncs",
            metadata={"status": status},
        )
