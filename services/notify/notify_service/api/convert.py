"""Contract messages ⇄ domain values for the NotifyService servicer (and nothing else).

Destinations leave the service masked only: a Notification message carries
`destination_masked`, never the address.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from meshkit.convert import optional_timestamp, timestamp, to_datetime
from notify_service.domain.model import (
    Attachment,
    Category,
    CategoryPreference,
    Channel,
    ChannelPreference,
    Content,
    Notification,
    NotificationFilter,
    Preferences,
    Priority,
    QuietHours,
    Recipient,
    Status,
    Template,
)
from notify_service.usecases.receipts import Handled, WebhookDelivery
from notify_service.usecases.sending import SendCommand
from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import notify_pb2 as pb

# Internal states as the contract shows them (module doc of domain/model.Status).
_STATUS_OUT = {
    Status.QUEUED: pb.NOTIFICATION_STATUS_QUEUED,
    Status.SENDING: pb.NOTIFICATION_STATUS_QUEUED,
    Status.SENT: pb.NOTIFICATION_STATUS_SENT,
    Status.DELIVERED: pb.NOTIFICATION_STATUS_DELIVERED,
    Status.BOUNCED: pb.NOTIFICATION_STATUS_BOUNCED,
    Status.FAILED: pb.NOTIFICATION_STATUS_FAILED,
    Status.DEAD_LETTERED: pb.NOTIFICATION_STATUS_FAILED,
    Status.SUPPRESSED: pb.NOTIFICATION_STATUS_SUPPRESSED,
}
_STATUS_IN = {
    pb.NOTIFICATION_STATUS_QUEUED: (Status.QUEUED, Status.SENDING),
    pb.NOTIFICATION_STATUS_SENT: (Status.SENT,),
    pb.NOTIFICATION_STATUS_DELIVERED: (Status.DELIVERED,),
    pb.NOTIFICATION_STATUS_BOUNCED: (Status.BOUNCED,),
    pb.NOTIFICATION_STATUS_FAILED: (Status.FAILED, Status.DEAD_LETTERED),
    pb.NOTIFICATION_STATUS_SUPPRESSED: (Status.SUPPRESSED,),
}
_PRIORITY_IN = {
    pb.NOTIFICATION_PRIORITY_UNSPECIFIED: Priority.NORMAL,
    pb.NOTIFICATION_PRIORITY_HIGH: Priority.HIGH,
    pb.NOTIFICATION_PRIORITY_NORMAL: Priority.NORMAL,
    pb.NOTIFICATION_PRIORITY_LOW: Priority.LOW,
}
_PRIORITY_OUT = {
    Priority.HIGH: pb.NOTIFICATION_PRIORITY_HIGH,
    Priority.NORMAL: pb.NOTIFICATION_PRIORITY_NORMAL,
    Priority.LOW: pb.NOTIFICATION_PRIORITY_LOW,
}


def channel_in(value: int) -> Channel | None:
    """None for UNSPECIFIED (the rules refuse it where it is required)."""
    if value == pb.CHANNEL_UNSPECIFIED:
        return None
    return Channel(pb.Channel.Name(value).removeprefix("CHANNEL_"))  # type: ignore[arg-type]


def channel_out(channel: Channel | None) -> pb.Channel.ValueType:
    if channel is None:
        return pb.CHANNEL_UNSPECIFIED
    return pb.Channel.Value(f"CHANNEL_{channel.value}")


def category_in(value: int) -> Category | None:
    if value == pb.NOTIFICATION_CATEGORY_UNSPECIFIED:
        return None
    name = pb.NotificationCategory.Name(value)  # type: ignore[arg-type]
    return Category(name.removeprefix("NOTIFICATION_CATEGORY_"))


def category_out(category: Category) -> pb.NotificationCategory.ValueType:
    return pb.NotificationCategory.Value(f"NOTIFICATION_CATEGORY_{category.value}")


def send_command(request: pb.SendNotificationRequest) -> SendCommand:
    r = request.recipient
    channel = channel_in(request.channel)
    assert channel is not None  # the contract requires a defined, non-zero channel
    inline = None
    if request.WhichOneof("content") == "inline":
        inline = Content(
            subject=request.inline.subject,
            body_text=request.inline.body_text,
            body_html=request.inline.body_html,
        )
    return SendCommand(
        recipient=Recipient(
            user_id=r.user_id,
            email=r.email,
            phone=r.phone,
            push_token=r.push_token,
            name=r.name,
            locale=r.locale,
            time_zone=r.time_zone,
        ),
        channel=channel,
        template_id=request.template_id if request.WhichOneof("content") == "template_id" else "",
        inline=inline,
        variables=dict(request.variables),
        priority=_PRIORITY_IN[request.priority],
        category=category_in(request.category),
        dedup_key=request.dedup_key,
        scheduled_at=to_datetime(request, "scheduled_at"),
        attachments=tuple(
            Attachment(a.filename, a.content_type, a.content) for a in request.attachments
        ),
        metadata=dict(request.metadata),
    )


def notification_proto(n: Notification) -> pb.Notification:
    message = pb.Notification(
        id=str(n.id),
        status=_STATUS_OUT[n.status],
        channel=channel_out(n.channel),
        category=category_out(n.category),
        priority=_PRIORITY_OUT[n.priority],
        user_id=n.user_id,
        destination_masked=n.destination_masked,
        template_id=n.template.template_id if n.template else "",
        template_version=n.template.version if n.template else 0,
        template_locale=n.template.locale if n.template else "",
        subject=n.content.subject,
        dedup_key=n.dedup_key,
        provider=n.provider,
        provider_message_id=n.provider_message_id,
        attempts=n.attempts,
        error_code=n.error_code,
        error_message=n.error_message,
        metadata=dict(n.metadata),
        scheduled_at=optional_timestamp(n.scheduled_at),
        sent_at=optional_timestamp(n.sent_at),
        delivered_at=optional_timestamp(n.delivered_at),
        created_at=timestamp(n.created_at),
        updated_at=timestamp(n.updated_at),
        dead_lettered=n.dead_lettered,
    )
    if n.status in (Status.QUEUED, Status.SENDING):
        message.deferred_reason = n.deferred_reason
        message.next_attempt_at.CopyFrom(timestamp(n.available_at))
    return message


def notification_filter(request: pb.ListNotificationsRequest, user_id: str) -> NotificationFilter:
    statuses: list[Status] = []
    for value in request.statuses:
        statuses.extend(_STATUS_IN.get(value, ()))
    return NotificationFilter(
        user_id=user_id,
        channel=channel_in(request.channel),
        statuses=tuple(dict.fromkeys(statuses)),
        category=category_in(request.category),
        dedup_key=request.dedup_key,
        created_from=to_datetime(request.created, "start") if request.HasField("created") else None,
        created_to=to_datetime(request.created, "end") if request.HasField("created") else None,
    )


def cursor_of(n: Notification) -> tuple[str, str]:
    return (n.created_at.isoformat(), str(n.id))


def page_after(cursor: tuple[str | int, ...] | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    return datetime.fromisoformat(str(cursor[0])), uuid.UUID(str(cursor[1]))


def template_in(t: pb.Template) -> Template:
    channel = channel_in(t.channel)
    category = category_in(t.category)
    assert channel is not None and category is not None  # required by the contract
    return Template(
        id=t.id,
        channel=channel,
        locale=t.locale,
        category=category,
        name=t.name,
        description=t.description,
        subject_template=t.subject_template,
        body_text_template=t.body_text_template,
        body_html_template=t.body_html_template,
        required_variables=tuple(t.required_variables),
    )


def template_proto(t: Template) -> pb.Template:
    return pb.Template(
        id=t.id,
        channel=channel_out(t.channel),
        locale=t.locale,
        name=t.name,
        description=t.description,
        category=category_out(t.category),
        subject_template=t.subject_template,
        body_text_template=t.body_text_template,
        body_html_template=t.body_html_template,
        required_variables=list(t.required_variables),
        version=t.version,
        created_at=optional_timestamp(t.created_at),
    )


def preferences_in(p: pb.Preferences) -> Preferences:
    return Preferences(
        user_id=p.user_id,
        channels=tuple(
            ChannelPreference(c, item.enabled)
            for item in p.channels
            if (c := channel_in(item.channel)) is not None
        ),
        categories=tuple(
            CategoryPreference(cat, channel_in(item.channel), item.enabled)
            for item in p.categories
            if (cat := category_in(item.category)) is not None
        ),
        quiet_hours=QuietHours(
            enabled=p.quiet_hours.enabled,
            start_minute=p.quiet_hours.start_minute,
            end_minute=p.quiet_hours.end_minute,
            time_zone=p.quiet_hours.time_zone,
        ),
    )


def preferences_proto(p: Preferences) -> pb.Preferences:
    return pb.Preferences(
        user_id=p.user_id,
        channels=[
            pb.ChannelPreference(channel=channel_out(c.channel), enabled=c.enabled)
            for c in p.channels
        ],
        categories=[
            pb.CategoryPreference(
                category=category_out(c.category), channel=channel_out(c.channel), enabled=c.enabled
            )
            for c in p.categories
        ],
        quiet_hours=pb.QuietHours(
            enabled=p.quiet_hours.enabled,
            start_minute=p.quiet_hours.start_minute,
            end_minute=p.quiet_hours.end_minute,
            time_zone=p.quiet_hours.time_zone,
        ),
        updated_at=optional_timestamp(p.updated_at),
    )


def webhook_delivery(webhook: common_pb2.ProviderWebhook) -> WebhookDelivery:
    return WebhookDelivery(
        provider=webhook.provider,
        payload=webhook.payload,
        headers={k.lower(): v for k, v in webhook.headers.items()},
        url=webhook.url,
    )


def webhook_response(handled: Handled) -> pb.HandleProviderWebhookResponse:
    return pb.HandleProviderWebhookResponse(
        event_id=handled.event_id,
        event_type=handled.event_type,
        status=common_pb2.WebhookStatus.Value(handled.outcome.value),
        event_count=handled.event_count,
        notification_ids=handled.notification_ids,
    )
