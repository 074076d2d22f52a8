"""Delivery receipts in the providers' words, mapped to what they mean for a notification.

SendGrid Event Webhook events and Twilio status callbacks report what happened after the
provider accepted a message; Twilio inbound messages carry opt-out keywords. Each becomes a
`Receipt`: the status it moves the notification to (if any), and whether the destination goes
on (or comes off) the suppression list.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from notify_service.domain.model import Status, SuppressionReason


class Effect(enum.StrEnum):
    NONE = "none"
    """Acknowledged, nothing to change (processed, deferred, open, click, sent...)."""
    STATUS = "status"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Receipt:
    event_id: str
    """The provider's id of this event (SendGrid `sg_event_id`; Twilio `MessageSid:status`)."""
    event_type: str
    effect: Effect
    status: Status | None = None
    error_code: str = ""
    error_message: str = ""
    suppression: SuppressionReason | None = None
    notification_id: str = ""
    provider_message_id: str = ""
    destination: str = ""
    occurred_at: float | None = None
    """Epoch seconds the provider gives for the event, if any."""


# Twilio error codes of a callback that mean the number itself cannot receive.
TWILIO_UNREACHABLE_NUMBER = frozenset({"30005", "30006", "21211", "21614"})


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def sendgrid_receipt(event: Mapping[str, Any]) -> Receipt:
    """One SendGrid Event Webhook event (our custom_args carry `notification_id`)."""
    kind = _s(event.get("event"))
    sg_message_id = _s(event.get("sg_message_id")).split(".")[0]
    base: dict[str, Any] = {
        "event_id": _s(event.get("sg_event_id")),
        "event_type": kind,
        "notification_id": _s(event.get("notification_id")),
        "provider_message_id": sg_message_id,
        "destination": _s(event.get("email")),
        "occurred_at": event.get("timestamp") if isinstance(event.get("timestamp"), int) else None,
    }
    reason = _s(event.get("reason"))[:300]
    if kind == "delivered":
        return Receipt(effect=Effect.STATUS, status=Status.DELIVERED, **base)
    if kind == "bounce":
        if _s(event.get("type")) == "blocked":  # a soft, temporary refusal
            return Receipt(
                effect=Effect.STATUS,
                status=Status.FAILED,
                error_code="blocked",
                error_message=reason,
                **base,
            )
        return Receipt(
            effect=Effect.STATUS,
            status=Status.BOUNCED,
            error_code="hard_bounce",
            error_message=reason,
            suppression=SuppressionReason.HARD_BOUNCE,
            **base,
        )
    if kind == "dropped":
        return Receipt(
            effect=Effect.STATUS,
            status=Status.FAILED,
            error_code="dropped",
            error_message=reason,
            **base,
        )
    if kind == "spamreport":
        return Receipt(effect=Effect.SUPPRESS, suppression=SuppressionReason.COMPLAINT, **base)
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Receipt(effect=Effect.UNSUBSCRIBE, **base)
    return Receipt(effect=Effect.NONE, **base)


def twilio_receipt(form: Mapping[str, str], notification_id: str = "") -> Receipt:
    """A Twilio status callback, or an inbound message (opt-out keywords)."""
    sid = form.get("MessageSid", "") or form.get("SmsSid", "")
    if form.get("SmsStatus") == "received" or "OptOutType" in form:
        opt = form.get("OptOutType", "").upper()
        base: dict[str, Any] = {
            "event_id": f"{sid}:inbound",
            "event_type": f"inbound:{opt.lower() or 'message'}",
            "destination": form.get("From", ""),
            "provider_message_id": sid,
        }
        if opt == "STOP":
            return Receipt(effect=Effect.SUPPRESS, suppression=SuppressionReason.SMS_STOP, **base)
        if opt == "START":
            return Receipt(effect=Effect.UNSUPPRESS, suppression=SuppressionReason.SMS_STOP, **base)
        return Receipt(effect=Effect.NONE, **base)
    status = form.get("MessageStatus", "") or form.get("SmsStatus", "")
    fields: dict[str, Any] = {
        "event_id": f"{sid}:{status}",
        "event_type": status,
        "notification_id": notification_id,
        "provider_message_id": sid,
        "destination": form.get("To", ""),
    }
    code = form.get("ErrorCode", "")
    if status == "delivered":
        return Receipt(effect=Effect.STATUS, status=Status.DELIVERED, **fields)
    if status in ("undelivered", "failed"):
        if code in TWILIO_UNREACHABLE_NUMBER:
            return Receipt(
                effect=Effect.STATUS,
                status=Status.BOUNCED,
                error_code=f"twilio_{code}",
                error_message=f"the number cannot receive messages ({status})",
                suppression=SuppressionReason.HARD_BOUNCE,
                **fields,
            )
        return Receipt(
            effect=Effect.STATUS,
            status=Status.FAILED,
            error_code=f"twilio_{code}" if code else status,
            error_message=f"Twilio reports the message {status}",
            **fields,
        )
    if status == "sent":
        return Receipt(effect=Effect.STATUS, status=Status.SENT, **fields)
    return Receipt(effect=Effect.NONE, **fields)
