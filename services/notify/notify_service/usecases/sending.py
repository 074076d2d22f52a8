"""SendNotification: check everything, then queue (or record why not) in one transaction.

Order, so that a refusal changes nothing:
1. the channel must have a provider (else CHANNEL_NOT_CONFIGURED: nothing queued);
2. the destination is validated and normalised (email-validator, phonenumbers: E.164);
3. the content is rendered now — template (latest version, best locale) or inline — so a
   missing variable, an unknown template or a broken template is INVALID_ARGUMENT;
4. one transaction: the dedup key (an earlier notification within the window is returned,
   nothing new queued), the suppression list and the user's preferences (opted out →
   SUPPRESSED, recorded with the reason), quiet hours (QUEUED, due when they end), insert.

Idempotency of the RPC itself is the kit's (one answer per caller + idempotency key); the dedup
key holds across callers and keys. The notification id, the Message-ID and the unsubscribe link
are fixed here, before anything is sent. So is the trace: the request's context is stored with
the notification, and its delivery is logged and announced in it (usecases/delivery.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr

from meshkit.db import Database
from meshkit.events import TraceContext
from notify_service.domain import preferences as consent_rules
from notify_service.domain import templates as rendering
from notify_service.domain.addresses import AddressRules, destination_for, mask
from notify_service.domain.errors import (
    ChannelNotConfigured,
    DedupRace,
    InvalidInput,
    Violation,
)
from notify_service.domain.model import (
    Attachment,
    Category,
    Channel,
    Content,
    Notification,
    Priority,
    Recipient,
    Status,
    TemplateRef,
)
from notify_service.store import consent
from notify_service.store import notifications as store
from notify_service.usecases.links import Links
from notify_service.usecases.metrics import NotifyMetrics
from notify_service.usecases.templates import Templates

logger = logging.getLogger(__name__)

MAX_SMS_CHARS = 1600


@dataclass(frozen=True, slots=True)
class SendCommand:
    recipient: Recipient
    channel: Channel
    template_id: str = ""
    inline: Content | None = None
    """Inline subject/body templates (rendered with `variables` like a template)."""
    variables: Mapping[str, str] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    category: Category | None = None
    dedup_key: str = ""
    scheduled_at: datetime | None = None
    attachments: tuple[Attachment, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendingRules:
    channels: Mapping[Channel, tuple[str, ...]]
    """Configured providers per channel, in failover order."""
    address_rules: AddressRules
    dedup_window_s: float
    max_attachment_bytes: int
    from_email: str


@dataclass(frozen=True, slots=True)
class Sent:
    notification: Notification
    duplicate: bool


def message_id_for(notification_id: uuid.UUID, from_email: str) -> str:
    domain = parseaddr(from_email)[1].rpartition("@")[2] or "tickettoken.invalid"
    return f"<{notification_id.hex}@{domain}>"


class Sending:
    """SendNotification (build once)."""

    def __init__(
        self,
        *,
        db: Database,
        templates: Templates,
        rules: SendingRules,
        links: Links,
        metrics: NotifyMetrics,
        wake: asyncio.Event,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._db = db
        self._templates = templates
        self._rules = rules
        self._links = links
        self._metrics = metrics
        self._wake = wake
        self._clock = clock

    async def send(self, cmd: SendCommand) -> Sent:
        rules = self._rules
        if not rules.channels.get(cmd.channel):
            raise ChannelNotConfigured(f"CHANNEL_{cmd.channel.value}")
        destination = destination_for(cmd.channel, cmd.recipient, rules.address_rules)
        self._check_attachments(cmd)
        notification_id = uuid.uuid4()
        variables = {
            "recipient_name": cmd.recipient.name,
            "notification_id": str(notification_id),
            "unsubscribe_url": self._links.unsubscribe_url(notification_id),
            **cmd.variables,
        }
        template_ref: TemplateRef | None = None
        if cmd.template_id:
            template = await self._templates.for_sending(
                cmd.template_id, cmd.recipient.locale, cmd.channel
            )
            content = rendering.render_template(template, variables)
            template_ref = TemplateRef(template.id, template.version, template.locale)
            category = cmd.category or template.category
        else:
            assert cmd.inline is not None
            if cmd.category is None:
                raise InvalidInput(
                    [Violation("category", "required with inline content (consent depends on it)")]
                )
            category = cmd.category
            content = self._render_inline(cmd, variables)
        self._check_content(cmd.channel, content)
        now = self._clock()
        due = max(now, cmd.scheduled_at) if cmd.scheduled_at else now
        trace = TraceContext.current()
        draft = Notification(
            id=notification_id,
            status=Status.QUEUED,
            channel=cmd.channel,
            category=category,
            priority=cmd.priority,
            user_id=cmd.recipient.user_id,
            destination=destination,
            destination_masked=mask(cmd.channel, destination),
            recipient_name=cmd.recipient.name,
            time_zone=cmd.recipient.time_zone,
            content=content,
            template=template_ref,
            dedup_key=cmd.dedup_key,
            message_id=message_id_for(notification_id, rules.from_email),
            provider="",
            provider_message_id="",
            provider_index=0,
            attempts=0,
            error_code="",
            error_message="",
            metadata=dict(cmd.metadata),
            scheduled_at=cmd.scheduled_at,
            available_at=due,
            deferred_reason="scheduled" if due > now else "",
            sent_at=None,
            delivered_at=None,
            failed_at=None,
            created_at=now,
            updated_at=now,
            attachments=cmd.attachments,
            # The request's trace: delivery logs and announces the notification in it.
            traceparent=trace.traceparent,
            tracestate=trace.tracestate,
        )
        result = await self._queue(draft, due)
        outcome = "duplicate" if result.duplicate else result.notification.status.value.lower()
        if result.notification.deferred_reason == "quiet_hours" and not result.duplicate:
            outcome = "deferred"
        self._metrics.requests.labels(cmd.channel.value, outcome).inc()
        if result.notification.status is Status.QUEUED and result.notification.available_at <= now:
            self._wake.set()
        logger.info(
            "notification accepted",
            extra={
                "notification_id": str(result.notification.id),
                "channel": cmd.channel.value,
                "outcome": outcome,
                "destination": result.notification.destination_masked,
            },
        )
        return result

    async def _queue(self, draft: Notification, due: datetime) -> Sent:
        """Consent, then one insert (dedup key included). Consent is read outside the insert's
        transaction on purpose: delivery checks it again right before sending, so a change in
        between is honoured anyway."""
        async with self._db.acquire() as conn:
            suppression, prefs = await consent.of(
                conn, draft.channel, draft.destination, draft.user_id
            )
            decision = consent_rules.decide(
                preferences=prefs,
                suppression=suppression,
                channel=draft.channel,
                category=draft.category,
                priority=draft.priority,
                when=due,
                recipient_time_zone=draft.time_zone,
            )
            if decision.verdict is consent_rules.Verdict.SUPPRESS:
                draft = dataclasses.replace(
                    draft,
                    status=Status.SUPPRESSED,
                    error_code=decision.reason,
                    error_message="not sent: " + decision.reason.replace("_", " "),
                    deferred_reason="",
                )
            elif decision.verdict is consent_rules.Verdict.DEFER:
                assert decision.until is not None
                draft = dataclasses.replace(
                    draft, available_at=decision.until, deferred_reason=decision.reason
                )
            window = self._rules.dedup_window_s
            if draft.attachments:
                async with conn.transaction():
                    stored = await store.insert(conn, draft, dedup_window_s=window)
            else:
                stored = await store.insert(conn, draft, dedup_window_s=window)
            if stored is not None:
                return Sent(stored, duplicate=False)
            holder = await store.dedup_holder(conn, draft.dedup_key)
        if holder is None:  # the holder's key expired in between: a rare race, try again
            raise DedupRace()
        return Sent(holder, duplicate=True)

    def _render_inline(self, cmd: SendCommand, variables: Mapping[str, str]) -> Content:
        inline = cmd.inline
        assert inline is not None
        problems = []
        if cmd.channel is Channel.EMAIL:
            if not inline.subject:
                problems.append(Violation("inline.subject", "an email needs a subject"))
            if not inline.body_text and not inline.body_html:
                problems.append(Violation("inline.body_html", "an email needs a body"))
        elif not inline.body_text:
            problems.append(Violation("inline.body_text", "required for this channel"))
        if problems:
            raise InvalidInput(problems)
        return rendering.render(
            inline.subject,
            inline.body_text,
            inline.body_html,
            variables,
            channel=cmd.channel,
            field_prefix="inline.",
        )

    def _check_attachments(self, cmd: SendCommand) -> None:
        if not cmd.attachments:
            return
        if cmd.channel is not Channel.EMAIL:
            raise InvalidInput([Violation("attachments", "only emails carry attachments")])
        total = sum(len(a.content) for a in cmd.attachments)
        if total > self._rules.max_attachment_bytes:
            raise InvalidInput(
                [
                    Violation(
                        "attachments",
                        f"{total} bytes in all; at most {self._rules.max_attachment_bytes}",
                    )
                ]
            )

    @staticmethod
    def _check_content(channel: Channel, content: Content) -> None:
        if channel is Channel.SMS and len(content.body_text) > MAX_SMS_CHARS:
            raise InvalidInput(
                [Violation("variables", f"the text renders longer than {MAX_SMS_CHARS} characters")]
            )
        if channel is Channel.EMAIL and not content.subject:
            raise InvalidInput([Violation("variables", "the subject renders empty")])
