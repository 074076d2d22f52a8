"""NotifyService servicer: proto in, use case, proto out — nothing else.

Requests reach these methods authenticated, authorised by the policy table and checked against
the contract's rules (the kit's call layer); row-level rules come from `access`, and the use
cases' domain errors become gRPC errors through `errors` (the service's error map). Mutating RPCs
are `@idempotent`: the kit stores the first answer per (caller, RPC, idempotency key) and
replays it byte for byte.
"""

from __future__ import annotations

import uuid

import grpc

from meshkit.idempotency import idempotent
from meshkit.paging import Page
from notify_service.api import access, convert
from notify_service.domain.model import Notification
from notify_service.usecases.preferences import PreferenceCases
from notify_service.usecases.reads import Reads
from notify_service.usecases.receipts import Receipts
from notify_service.usecases.sending import Sending
from notify_service.usecases.templates import Templates
from tickettoken.notify.v1 import notify_pb2 as pb
from tickettoken.notify.v1 import notify_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]


class NotifyServicer(notify_pb2_grpc.NotifyServiceServicer):
    """Thin adapter between the NotifyService contract and the use cases."""

    def __init__(
        self,
        *,
        sending: Sending,
        reads: Reads,
        templates: Templates,
        preferences: PreferenceCases,
        receipts: Receipts,
    ) -> None:
        self.sending = sending
        self.reads = reads
        self.templates = templates
        self.preferences = preferences
        self.receipts = receipts

    @idempotent
    async def SendNotification(
        self, request: pb.SendNotificationRequest, context: Context
    ) -> pb.SendNotificationResponse:
        result = await self.sending.send(convert.send_command(request))
        return pb.SendNotificationResponse(
            notification=convert.notification_proto(result.notification),
            duplicate=result.duplicate,
        )

    async def GetNotification(
        self, request: pb.GetNotificationRequest, context: Context
    ) -> pb.GetNotificationResponse:
        found = await self.reads.get(
            uuid.UUID(request.notification_id), may_see=access.may_see(access.principal())
        )
        return pb.GetNotificationResponse(notification=convert.notification_proto(found))

    async def ListNotifications(
        self, request: pb.ListNotificationsRequest, context: Context
    ) -> pb.ListNotificationsResponse:
        page: Page[Notification] = Page.of(request)
        user_id = access.list_scope(access.principal(), request.user_id)
        found = await self.reads.find(
            convert.notification_filter(request, user_id),
            limit=page.size + 1,
            after=convert.page_after(page.after),
        )
        shown, token = page.cut(found, key=convert.cursor_of)
        return pb.ListNotificationsResponse(
            notifications=[convert.notification_proto(n) for n in shown], next_page_token=token
        )

    @idempotent
    async def UpsertTemplate(
        self, request: pb.UpsertTemplateRequest, context: Context
    ) -> pb.UpsertTemplateResponse:
        stored, created = await self.templates.upsert(
            convert.template_in(request.template), expected_version=request.expected_version
        )
        return pb.UpsertTemplateResponse(template=convert.template_proto(stored), created=created)

    async def GetTemplate(
        self, request: pb.GetTemplateRequest, context: Context
    ) -> pb.GetTemplateResponse:
        found = await self.templates.get(request.template_id, request.locale, request.version)
        return pb.GetTemplateResponse(template=convert.template_proto(found))

    async def RenderTemplate(
        self, request: pb.RenderTemplateRequest, context: Context
    ) -> pb.RenderTemplateResponse:
        template, content = await self.templates.preview(
            request.template_id, request.locale, request.version, dict(request.variables)
        )
        return pb.RenderTemplateResponse(
            subject=content.subject,
            body_text=content.body_text,
            body_html=content.body_html,
            template_version=template.version,
        )

    @idempotent
    async def SetPreferences(
        self, request: pb.SetPreferencesRequest, context: Context
    ) -> pb.SetPreferencesResponse:
        stored = await self.preferences.set(
            convert.preferences_in(request.preferences),
            authorize=access.own_user(access.principal()),
        )
        return pb.SetPreferencesResponse(preferences=convert.preferences_proto(stored))

    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: Context
    ) -> pb.GetPreferencesResponse:
        found = await self.preferences.get(
            request.user_id, authorize=access.own_user(access.principal())
        )
        return pb.GetPreferencesResponse(preferences=convert.preferences_proto(found))

    async def HandleProviderWebhook(
        self, request: pb.HandleProviderWebhookRequest, context: Context
    ) -> pb.HandleProviderWebhookResponse:
        # Deduplicated by the provider's event ids in the inbox, not by an idempotency key.
        handled = await self.receipts.handle(convert.webhook_delivery(request.webhook))
        return convert.webhook_response(handled)
