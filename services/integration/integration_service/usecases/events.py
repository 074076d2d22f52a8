"""Shared step: the integration service's events (contract messages in events.proto), staged in
the outbox inside the caller's transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from integration_service.domain.model import Connection, ConnectionStatus, Provider
from integration_service.domain.webhooks import ProviderEvent
from meshkit.events import EventPublisher
from tickettoken.integration.v1 import events_pb2 as ev
from tickettoken.integration.v1 import integration_pb2 as pb

PROVIDERS = {
    Provider.STRIPE: pb.PROVIDER_STRIPE,
    Provider.SQUARE: pb.PROVIDER_SQUARE,
    Provider.MAILCHIMP: pb.PROVIDER_MAILCHIMP,
    Provider.QUICKBOOKS: pb.PROVIDER_QUICKBOOKS,
}
STATUSES = {
    ConnectionStatus.CONNECTED: pb.CONNECTION_STATUS_CONNECTED,
    ConnectionStatus.NEEDS_REAUTH: pb.CONNECTION_STATUS_NEEDS_REAUTH,
    ConnectionStatus.ERROR: pb.CONNECTION_STATUS_ERROR,
    ConnectionStatus.DISCONNECTED: pb.CONNECTION_STATUS_DISCONNECTED,
}
AGGREGATE = "connection"


class IntegrationEvents:
    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    async def connection_failed(
        self, conn: asyncpg.Connection, connection: Connection, detected_by: str
    ) -> None:
        event = ev.ConnectionFailed(
            connection_id=str(connection.id),
            venue_id=connection.venue_id,
            provider=PROVIDERS[connection.provider],
            status=STATUSES[connection.status],
            error_code=connection.last_error_code,
            error_message=connection.last_error,
            external_account_id=connection.external_account_id,
            detected_by=detected_by,
        )
        event.failed_at.FromDatetime(connection.updated_at)
        await self._publisher.publish(
            conn, event, aggregate_type=AGGREGATE, aggregate_id=str(connection.id)
        )

    async def connection_recovered(
        self,
        conn: asyncpg.Connection,
        connection: Connection,
        previous: ConnectionStatus,
        recovered_by: str,
    ) -> None:
        event = ev.ConnectionRecovered(
            connection_id=str(connection.id),
            venue_id=connection.venue_id,
            provider=PROVIDERS[connection.provider],
            previous_status=STATUSES[previous],
            external_account_id=connection.external_account_id,
            recovered_by=recovered_by,
        )
        event.recovered_at.FromDatetime(connection.updated_at)
        await self._publisher.publish(
            conn, event, aggregate_type=AGGREGATE, aggregate_id=str(connection.id)
        )

    async def provider_change(
        self, conn: asyncpg.Connection, connection: Connection, change: ProviderEvent
    ) -> None:
        event = ev.ProviderChangeReceived(
            connection_id=str(connection.id),
            venue_id=connection.venue_id,
            provider=PROVIDERS[connection.provider],
            provider_event_id=change.event_id,
            event_type=change.event_type,
            entity_type=(
                pb.EntityType.Value("ENTITY_TYPE_" + change.entity_type.value)
                if change.entity_type is not None
                else pb.ENTITY_TYPE_UNSPECIFIED
            ),
            external_ids=list(change.external_ids),
            operation=change.operation,
        )
        if change.occurred_at is not None:
            event.occurred_at.FromDatetime(change.occurred_at)
        event.received_at.FromDatetime(datetime.now(UTC))
        # One event per (provider event, connection): a replay cannot stage it twice.
        event_id = uuid.uuid5(
            uuid.NAMESPACE_URL, f"integration:{change.provider}:{change.event_id}:{connection.id}"
        )
        await self._publisher.publish(
            conn,
            event,
            aggregate_type=AGGREGATE,
            aggregate_id=str(connection.id),
            event_id=event_id,
        )
