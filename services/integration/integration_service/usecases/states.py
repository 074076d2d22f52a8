"""Shared step: a connection's health transitions and their events, in one transaction.

CONNECTED → NEEDS_REAUTH | ERROR   publishes ConnectionFailed (once: only the transition)
NEEDS_REAUTH | ERROR → CONNECTED   publishes ConnectionRecovered (the first success after)
"""

from __future__ import annotations

import uuid

import asyncpg

from integration_service.domain.model import Connection, ConnectionStatus
from integration_service.store import connections as store
from integration_service.usecases.events import IntegrationEvents

FAILED = (ConnectionStatus.NEEDS_REAUTH, ConnectionStatus.ERROR)


class ConnectionStates:
    def __init__(self, events: IntegrationEvents) -> None:
        self._events = events

    async def fail(
        self,
        conn: asyncpg.Connection,
        connection_id: uuid.UUID,
        status: ConnectionStatus,
        *,
        code: str,
        message: str,
        detected_by: str,
        tested: bool = False,
    ) -> Connection | None:
        """Move a CONNECTED (or the other failed state's) connection to `status`; None when it
        was already there or is disconnected (nothing published)."""
        others = [s for s in (ConnectionStatus.CONNECTED, *FAILED) if s is not status]
        changed = await store.set_status(
            conn,
            connection_id,
            status,
            from_statuses=others,
            error_code=code,
            error=message,
            tested=tested,
        )
        if changed is not None:
            await self._events.connection_failed(conn, changed, detected_by)
        return changed

    async def recover(
        self,
        conn: asyncpg.Connection,
        connection: Connection,
        *,
        recovered_by: str,
        tested: bool = False,
    ) -> Connection:
        """A success: a failed connection becomes CONNECTED (and says so once)."""
        if connection.status not in FAILED:
            return connection
        changed = await store.set_status(
            conn,
            connection.id,
            ConnectionStatus.CONNECTED,
            from_statuses=[connection.status],
            tested=tested,
        )
        if changed is None:
            return connection
        await self._events.connection_recovered(conn, changed, connection.status, recovered_by)
        return changed
