"""IntegrationService servicer: proto in, use case, proto out — nothing else.

Requests reach these methods authenticated, authorised by the policy table and checked against
the contract's rules (the kit's call layer); who may touch which connection is decided by the use
cases on the caller's `Actor` (`access`); domain errors become gRPC errors through `errors`.
Mutating RPCs are `@idempotent`. The sync engine's RPCs (issue 14) are in `sync_rpcs`.
"""

from __future__ import annotations

import uuid

import grpc

from integration_service.api import access, convert
from integration_service.api.sync_rpcs import SyncRpcs
from integration_service.domain.model import Connection, Secret
from integration_service.usecases.connections import ConnectionCases
from integration_service.usecases.mappings import MappingCases
from integration_service.usecases.oauth import OAuthCases
from integration_service.usecases.providers import ProviderCases
from integration_service.usecases.sync import SyncCases
from integration_service.usecases.transactions import TransactionCases
from integration_service.usecases.webhooks import WebhookCases
from meshkit.idempotency import idempotent
from meshkit.paging import Page
from tickettoken.integration.v1 import integration_pb2 as pb
from tickettoken.integration.v1 import integration_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]


class IntegrationServicer(SyncRpcs, integration_pb2_grpc.IntegrationServiceServicer):
    """Thin adapter between the IntegrationService contract and the use cases."""

    def __init__(
        self,
        *,
        providers: ProviderCases,
        oauth: OAuthCases,
        connections: ConnectionCases,
        webhooks: WebhookCases,
        mappings: MappingCases,
        sync: SyncCases,
        transactions: TransactionCases,
    ) -> None:
        self.providers = providers
        self.oauth = oauth
        self.connections = connections
        self.webhooks = webhooks
        self.mappings = mappings
        self.sync = sync
        self.transactions = transactions

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: Context
    ) -> pb.ListProvidersResponse:
        return pb.ListProvidersResponse(
            providers=[convert.provider_proto(p) for p in self.providers.list()]
        )

    @idempotent
    async def StartOAuth(
        self, request: pb.StartOAuthRequest, context: Context
    ) -> pb.StartOAuthResponse:
        started = await self.oauth.start(
            access.actor(),
            venue_id=request.venue_id,
            provider=convert.provider(request.provider),
            redirect_uri=request.redirect_uri,
            scopes=tuple(request.scopes),
        )
        response = pb.StartOAuthResponse(
            authorization_url=started.authorization_url, state=started.state
        )
        response.expires_at.FromDatetime(started.expires_at)
        return response

    @idempotent
    async def CompleteOAuth(
        self, request: pb.CompleteOAuthRequest, context: Context
    ) -> pb.CompleteOAuthResponse:
        connection = await self.oauth.complete(
            access.actor(),
            state=request.state,
            code=request.code,
            error=request.error,
            params=dict(request.extra_params),
        )
        return pb.CompleteOAuthResponse(connection=convert.connection_proto(connection))

    @idempotent
    async def ConnectWithApiKey(
        self, request: pb.ConnectWithApiKeyRequest, context: Context
    ) -> pb.ConnectWithApiKeyResponse:
        connection = await self.connections.connect_api_key(
            access.actor(),
            venue_id=request.venue_id,
            provider=convert.provider(request.provider),
            api_key=Secret(request.api_key),
            settings=dict(request.settings),
        )
        return pb.ConnectWithApiKeyResponse(connection=convert.connection_proto(connection))

    async def GetConnection(
        self, request: pb.GetConnectionRequest, context: Context
    ) -> pb.GetConnectionResponse:
        found = await self.connections.get(access.actor(), uuid.UUID(request.connection_id))
        return pb.GetConnectionResponse(connection=convert.connection_proto(found))

    async def ListConnections(
        self, request: pb.ListConnectionsRequest, context: Context
    ) -> pb.ListConnectionsResponse:
        page: Page[Connection] = Page.of(request)
        flt = convert.connection_filter(request)
        if flt is None:
            return pb.ListConnectionsResponse()
        found = await self.connections.find(
            access.actor(),
            flt,
            limit=page.size + 1,
            after=convert.page_after(page.after),
        )
        shown, token = page.cut(found, key=convert.cursor_of)
        return pb.ListConnectionsResponse(
            connections=[convert.connection_proto(c) for c in shown], next_page_token=token
        )

    async def TestConnection(
        self, request: pb.TestConnectionRequest, context: Context
    ) -> pb.TestConnectionResponse:
        result = await self.connections.test(access.actor(), uuid.UUID(request.connection_id))
        return convert.test_response(result)

    @idempotent
    async def Disconnect(
        self, request: pb.DisconnectRequest, context: Context
    ) -> pb.DisconnectResponse:
        connection = await self.connections.disconnect(
            access.actor(),
            uuid.UUID(request.connection_id),
            revoke=request.revoke_at_provider,
        )
        return pb.DisconnectResponse(connection=convert.connection_proto(connection))

    @idempotent
    async def SetFieldMappings(
        self, request: pb.SetFieldMappingsRequest, context: Context
    ) -> pb.SetFieldMappingsResponse:
        stored = await self.mappings.set(
            access.actor(),
            uuid.UUID(request.connection_id),
            tuple(convert.field_mapping(m) for m in request.mappings),
            expected_version=request.expected_version,
        )
        return pb.SetFieldMappingsResponse(
            mappings=[convert.field_mapping_proto(m) for m in stored.mappings],
            version=stored.version,
        )

    async def GetFieldMappings(
        self, request: pb.GetFieldMappingsRequest, context: Context
    ) -> pb.GetFieldMappingsResponse:
        found = await self.mappings.get(
            access.actor(),
            uuid.UUID(request.connection_id),
            convert.entity(request.entity_type) if request.entity_type else None,
        )
        return pb.GetFieldMappingsResponse(
            mappings=[convert.field_mapping_proto(m) for m in found.mappings],
            version=found.version,
            defaults=found.defaults,
        )

    @idempotent
    async def RecordTransaction(
        self, request: pb.RecordTransactionRequest, context: Context
    ) -> pb.RecordTransactionResponse:
        # Only payment's service principal may call it (the policy table).
        recorded = await self.transactions.record(convert.transaction(request))
        return pb.RecordTransactionResponse(
            transaction_id=recorded.transaction_id,
            sync_job_ids=[str(j) for j in recorded.job_ids],
        )

    async def HandleProviderWebhook(
        self, request: pb.HandleProviderWebhookRequest, context: Context
    ) -> pb.HandleProviderWebhookResponse:
        # Deduplicated by the provider's event ids in the inbox, not by an idempotency key.
        handled = await self.webhooks.handle(convert.webhook_delivery(request.webhook))
        return convert.webhook_response(handled)
