"""The notify service's entities, as plain typed values.

Enum values are the names the database stores; the api layer maps them to the contract's enums.
Destinations (email addresses, phone numbers) are personal data: records carry them because a
notification must be sent, but anything shown or logged uses `destination_masked`.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class Channel(enum.StrEnum):
    EMAIL = "EMAIL"
    SMS = "SMS"
    PUSH = "PUSH"


class Status(enum.StrEnum):
    """Internal states. The contract shows SENDING as QUEUED and DEAD_LETTERED as FAILED (with
    `dead_lettered`): SENDING is "an attempt is in flight", which readers need not tell apart."""

    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    BOUNCED = "BOUNCED"
    FAILED = "FAILED"
    DEAD_LETTERED = "DEAD_LETTERED"
    SUPPRESSED = "SUPPRESSED"


class Priority(enum.IntEnum):
    """Lower sorts first in the queue."""

    HIGH = 1
    NORMAL = 2
    LOW = 3


class Category(enum.StrEnum):
    TRANSACTIONAL = "TRANSACTIONAL"
    ACCOUNT = "ACCOUNT"
    EVENT_UPDATES = "EVENT_UPDATES"
    MARKETING = "MARKETING"


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who receives a notification (as the caller gave it)."""

    user_id: str = ""
    email: str = ""
    phone: str = ""
    push_token: str = ""
    name: str = ""
    locale: str = ""
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Content:
    """What is sent: rendered subject and bodies."""

    subject: str
    body_text: str
    body_html: str = ""


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """The template (and version, locale) a notification was rendered from."""

    template_id: str
    version: int
    locale: str


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification record (the queue row and its history)."""

    id: uuid.UUID
    status: Status
    channel: Channel
    category: Category
    priority: Priority
    user_id: str
    destination: str
    """The normalised address (email or E.164 phone): personal data, never logged."""
    destination_masked: str
    recipient_name: str
    time_zone: str
    """The recipient's IANA zone as given (quiet hours fall back to it)."""
    content: Content
    template: TemplateRef | None
    dedup_key: str
    message_id: str
    """Our RFC 5322 Message-ID (SMTP) and provider reference: fixed at creation, reused by
    every attempt, so copies of one notification are recognisably the same message."""
    provider: str
    provider_message_id: str
    provider_index: int
    attempts: int
    error_code: str
    error_message: str
    metadata: Mapping[str, str]
    scheduled_at: datetime | None
    available_at: datetime
    deferred_reason: str
    sent_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    attachments: tuple[Attachment, ...] = ()
    traceparent: str = ""
    tracestate: str = ""
    """The W3C trace context of the request that queued it ("" when none): its delivery and
    the events announcing it continue that trace."""

    @property
    def dead_lettered(self) -> bool:
        return self.status is Status.DEAD_LETTERED

    @property
    def outcome_unknown(self) -> bool:
        """A previous attempt was in flight when its worker stopped (crash, lost lease): the
        provider may or may not have accepted it."""
        return self.status is Status.SENDING


@dataclass(frozen=True, slots=True)
class NotificationFilter:
    """ListNotifications filters (AND)."""

    user_id: str = ""
    channel: Channel | None = None
    statuses: tuple[Status, ...] = ()
    category: Category | None = None
    dedup_key: str = ""
    created_from: datetime | None = None
    created_to: datetime | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """One version of a template for one channel and locale."""

    id: str
    channel: Channel
    locale: str
    category: Category
    name: str = ""
    description: str = ""
    subject_template: str = ""
    body_text_template: str = ""
    body_html_template: str = ""
    required_variables: tuple[str, ...] = ()
    version: int = 0
    created_at: datetime | None = None
    source: str = "api"
    """`api` (UpsertTemplate) or `shipped` (the templates the service ships, seeded at start)."""


@dataclass(frozen=True, slots=True)
class ChannelPreference:
    channel: Channel
    enabled: bool


@dataclass(frozen=True, slots=True)
class CategoryPreference:
    category: Category
    channel: Channel | None
    """None: every channel."""
    enabled: bool


@dataclass(frozen=True, slots=True)
class QuietHours:
    enabled: bool = False
    start_minute: int = 0
    end_minute: int = 0
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class Preferences:
    user_id: str
    channels: tuple[ChannelPreference, ...] = ()
    categories: tuple[CategoryPreference, ...] = ()
    quiet_hours: QuietHours = field(default_factory=QuietHours)
    updated_at: datetime | None = None


class SuppressionReason(enum.StrEnum):
    """Why an address is on the suppression list."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    SMS_STOP = "sms_stop"
    UNSUBSCRIBED = "unsubscribed"

    @property
    def blocks_transactional(self) -> bool:
        """An address that bounced, complained or texted STOP gets nothing at all; one that
        unsubscribed (a guest, through a link) still gets its receipts and tickets."""
        return self is not SuppressionReason.UNSUBSCRIBED


@dataclass(frozen=True, slots=True)
class Suppression:
    channel: Channel
    destination: str
    reason: SuppressionReason
    created_at: datetime | None = None
