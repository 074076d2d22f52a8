"""Notifications a relay asks notify for: a buyer's contact from an event → a SendNotification.

Events carry the buyer's contact (`tickettoken.common.v1.ContactInfo`) so that no service reads
another's tables; these helpers turn it into notify's `Recipient`, pick the channel (email when
the buyer has an address; SMS only for templates that have an SMS version), and format the
values templates show (money, times) the same way for every producer.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.timestamp_pb2 import Timestamp

from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import notify_pb2

__all__ = ["money_text", "notification", "recipient", "time_text"]

# ISO 4217 minor-unit exponents other than 2 (the currencies the mesh takes are two-decimal).
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "JOD": 3}
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥"}


def money_text(money: common_pb2.Money) -> str:
    """`$12.50`, `€1,234.00`, `CHF 5.00`: integer arithmetic on the minor units, never floats."""
    exponent = _EXPONENTS.get(money.currency, 2)
    amount = abs(money.amount_minor)
    major, minor = divmod(amount, 10**exponent)
    number = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    sign = "-" if money.amount_minor < 0 else ""
    symbol = _SYMBOLS.get(money.currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{money.currency} {number}"


def time_text(when: Timestamp, time_zone: str = "") -> str:
    """`Fri 1 May 2026, 20:00 CDT` in the person's time zone (UTC when unknown or invalid)."""
    zone: ZoneInfo | None = None
    if time_zone:
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
    moment = when.ToDatetime(tzinfo=UTC).astimezone(zone or UTC)
    return f"{moment:%a} {moment.day} {moment:%b %Y, %H:%M} {moment.tzname()}"


def recipient(contact: common_pb2.ContactInfo, user_id: str) -> notify_pb2.Recipient:
    """notify's Recipient for a buyer (preferences are looked up by `user_id`)."""
    return notify_pb2.Recipient(
        user_id=user_id,
        email=contact.email,
        phone=contact.phone,
        name=contact.name,
        locale=contact.locale,
        time_zone=contact.time_zone,
    )


def notification(
    *,
    key: str,
    contact: common_pb2.ContactInfo,
    user_id: str,
    email_template: str,
    sms_template: str = "",
    variables: Mapping[str, str],
    dedup_key: str,
    priority: notify_pb2.NotificationPriority.ValueType = notify_pb2.NOTIFICATION_PRIORITY_NORMAL,
    metadata: Mapping[str, str] | None = None,
) -> notify_pb2.SendNotificationRequest | None:
    """A transactional SendNotification to the buyer: by email when the contact has an address,
    else by SMS when the message has an SMS template and the contact a phone number; None when
    neither (nothing to send).

    Deterministic for the same input (no clock, no randomness): a redelivered event makes the
    same request under the same idempotency key, as the consumer's fingerprint check requires.
    """
    if contact.email:
        channel, template = notify_pb2.CHANNEL_EMAIL, email_template
    elif contact.phone and sms_template:
        channel, template = notify_pb2.CHANNEL_SMS, sms_template
    else:
        return None
    return notify_pb2.SendNotificationRequest(
        idempotency_key=key,
        recipient=recipient(contact, user_id),
        channel=channel,
        template_id=template,
        variables=dict(variables),
        priority=priority,
        category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
        dedup_key=dedup_key,
        metadata=dict(metadata or {}),
    )
