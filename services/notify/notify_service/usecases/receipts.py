"""Delivery receipts: HandleProviderWebhook and the HTTP webhook routes (same code).

1. Verify: SendGrid's ECDSA signature over timestamp + raw body, and the timestamp within the
   tolerance (stale → refused); Twilio's X-Twilio-Signature over the full URL and the sorted
   form parameters. A forged, stale or malformed delivery is refused and changes nothing.
2. In ONE transaction per delivery: each event is claimed in the inbox by the provider's event
   id (SendGrid `sg_event_id`; Twilio message sid + status, or sid for an inbound message) —
   a replay finds it there and changes nothing — and applied: a status move along the status
   machine (an out-of-order receipt, e.g. `sent` after `delivered`, is acknowledged and
   ignored), with its event; bounces, complaints and STOP replies feed the suppression list,
   START removes it; an unsubscribe event works like the one-click link.
3. A processing error rolls all of it back (WebhookNotProcessed: HTTP 503 / UNAVAILABLE), so
   the provider delivers again.
"""

from __future__ import annotations

import enum
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from meshkit.db import Database
from notify_service.adapters.sendgrid import SIGNATURE_HEADER as SG_SIGNATURE
from notify_service.adapters.sendgrid import TIMESTAMP_HEADER as SG_TIMESTAMP
from notify_service.adapters.sendgrid import SendGridVerifier
from notify_service.adapters.twilio import SIGNATURE_HEADER as TW_SIGNATURE
from notify_service.adapters.twilio import TwilioVerifier
from notify_service.domain.addresses import AddressRules
from notify_service.domain.errors import (
    NotifyError,
    ProviderNotConfigured,
    Violation,
    WebhookNotProcessed,
    WebhookStale,
    WebhookUnverified,
)
from notify_service.domain.model import Channel, Notification
from notify_service.domain.receipts import Effect, Receipt, sendgrid_receipt, twilio_receipt
from notify_service.store import inbox
from notify_service.store import notifications as store
from notify_service.usecases import consent
from notify_service.usecases.events import NotifyEvents, traced
from notify_service.usecases.metrics import NotifyMetrics

logger = logging.getLogger(__name__)

MAX_EVENTS = 1000


class Outcome(enum.StrEnum):
    """Values: the contract's WebhookStatus names."""

    PROCESSED = "WEBHOOK_STATUS_PROCESSED"
    DUPLICATE = "WEBHOOK_STATUS_DUPLICATE"
    IGNORED = "WEBHOOK_STATUS_IGNORED"


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    provider: str
    payload: bytes
    headers: Mapping[str, str]
    """Lower-cased names."""
    url: str = ""


@dataclass(slots=True)
class Handled:
    event_id: str = ""
    event_type: str = ""
    outcome: Outcome = Outcome.IGNORED
    event_count: int = 0
    notification_ids: list[str] = field(default_factory=list)


def _header_field(name: str) -> str:
    return f'webhook.headers["{name}"]'


class Receipts:
    """Verifies and applies delivery receipts (build once)."""

    def __init__(
        self,
        *,
        db: Database,
        events: NotifyEvents,
        metrics: NotifyMetrics,
        sendgrid: SendGridVerifier | None,
        twilio: TwilioVerifier | None,
        tolerance_s: int,
        address_rules: AddressRules,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._events = events
        self._metrics = metrics
        self._sendgrid = sendgrid
        self._twilio = twilio
        self._tolerance_s = tolerance_s
        self._address_rules = address_rules
        self._clock = clock

    async def handle(self, delivery: WebhookDelivery) -> Handled:
        try:
            if delivery.provider == "sendgrid":
                receipts = self._sendgrid_receipts(delivery)
                channel = Channel.EMAIL
            elif delivery.provider == "twilio":
                receipts = [self._twilio_receipt(delivery)]
                channel = Channel.SMS
            else:
                raise WebhookUnverified(
                    [Violation("webhook.provider", "notify takes sendgrid or twilio receipts")]
                )
        except NotifyError:
            self._metrics.receipts.labels(delivery.provider or "unknown", "refused").inc()
            raise
        try:
            handled = await self._db.run_in_tx(
                lambda conn: self._apply_all(conn, delivery.provider, channel, receipts)
            )
        except NotifyError:
            raise
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            logger.warning(
                "receipt processing failed",
                extra={"provider": delivery.provider, "error": repr(exc)},
            )
            raise WebhookNotProcessed() from exc
        self._metrics.receipts.labels(delivery.provider, handled.outcome.name.lower()).inc()
        return handled

    # -- 1. verify --------------------------------------------------------------------------
    def _sendgrid_receipts(self, delivery: WebhookDelivery) -> list[Receipt]:
        if self._sendgrid is None:
            raise ProviderNotConfigured("sendgrid")
        if not self._sendgrid.verify(delivery.payload, delivery.headers):
            raise WebhookUnverified(
                [Violation(_header_field(SG_SIGNATURE), "signature does not verify")]
            )
        try:
            signed_at = int(delivery.headers.get(SG_TIMESTAMP, ""))
        except ValueError:
            raise WebhookUnverified(
                [Violation(_header_field(SG_TIMESTAMP), "not a unix timestamp")]
            ) from None
        if abs(self._clock() - signed_at) > self._tolerance_s:
            raise WebhookStale(
                [
                    Violation(
                        _header_field(SG_TIMESTAMP),
                        f"signed more than {self._tolerance_s} s from now (stale or replayed)",
                    )
                ]
            )
        try:
            events: Any = json.loads(delivery.payload)
        except (ValueError, UnicodeDecodeError):
            events = None
        if (
            not isinstance(events, list)
            or not events
            or len(events) > MAX_EVENTS
            or not all(isinstance(e, dict) and e.get("sg_event_id") for e in events)
        ):
            raise WebhookUnverified(
                [Violation("webhook.payload", "not a batch of SendGrid events")]
            )
        return [sendgrid_receipt(e) for e in events]

    def _twilio_receipt(self, delivery: WebhookDelivery) -> Receipt:
        if self._twilio is None:
            raise ProviderNotConfigured("twilio")
        try:
            params = dict(parse_qsl(delivery.payload.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            params = {}
        if not self._twilio.verify(delivery.url, params, delivery.headers):
            raise WebhookUnverified(
                [Violation(_header_field(TW_SIGNATURE), "signature does not verify")]
            )
        if not params.get("MessageSid") and not params.get("SmsSid"):
            raise WebhookUnverified([Violation("webhook.payload", "not a Twilio callback")])
        query = dict(parse_qsl(urlsplit(delivery.url).query))
        return twilio_receipt(params, query.get("notification_id", ""))

    # -- 2. apply ------------------------------------------------------------------------------
    async def _apply_all(
        self, conn: asyncpg.Connection, provider: str, channel: Channel, receipts: list[Receipt]
    ) -> Handled:
        handled = Handled(
            event_id=receipts[0].event_id,
            event_type=receipts[0].event_type,
            event_count=len(receipts),
        )
        outcomes = []
        for receipt in receipts:
            outcome, changed = await self._apply(conn, provider, channel, receipt)
            outcomes.append(outcome)
            if changed is not None and str(changed.id) not in handled.notification_ids:
                handled.notification_ids.append(str(changed.id))
        if Outcome.PROCESSED in outcomes:
            handled.outcome = Outcome.PROCESSED
        elif outcomes and all(o is Outcome.DUPLICATE for o in outcomes):
            handled.outcome = Outcome.DUPLICATE
        return handled

    async def _find(self, conn: asyncpg.Connection, receipt: Receipt) -> Notification | None:
        try:
            by_id = uuid.UUID(receipt.notification_id) if receipt.notification_id else None
        except ValueError:
            by_id = None
        if by_id is not None:
            found = await store.get(conn, by_id)
            if found is not None:
                return found
        if receipt.provider_message_id:
            return await store.by_provider_message(conn, receipt.provider_message_id)
        return None

    async def _apply(
        self, conn: asyncpg.Connection, provider: str, channel: Channel, receipt: Receipt
    ) -> tuple[Outcome, Notification | None]:
        if not receipt.event_id or not await inbox.claim(
            conn, provider, receipt.event_id, receipt.event_type
        ):
            return Outcome.DUPLICATE, None
        notification = await self._find(conn, receipt)
        changed: Notification | None = None
        acted = False
        if receipt.effect is Effect.STATUS and receipt.status is not None and notification:
            changed = await store.apply_status(
                conn,
                notification.id,
                receipt.status,
                error_code=receipt.error_code,
                error_message=receipt.error_message,
                provider_message_id=receipt.provider_message_id,
            )
            if changed is not None:
                acted = True
                event = self._events.for_status(changed)
                if event is not None:
                    await self._events.stage(conn, [event])
                self._metrics.outcomes.labels(changed.channel.value, changed.status.value).inc()
        if receipt.suppression is not None and receipt.destination:
            if receipt.effect is Effect.UNSUPPRESS:
                acted |= await consent.unsuppress(
                    conn, channel, receipt.destination, receipt.suppression, self._address_rules
                )
            elif receipt.effect in (Effect.SUPPRESS, Effect.STATUS):
                acted |= await consent.suppress(
                    conn,
                    channel,
                    receipt.destination,
                    receipt.suppression,
                    f"{provider}:{receipt.event_type}",
                    self._address_rules,
                )
        if receipt.effect is Effect.UNSUBSCRIBE and notification is not None:
            await consent.unsubscribe(conn, notification, f"{provider}:unsubscribe")
            acted = True
        outcome = Outcome.PROCESSED if acted else Outcome.IGNORED
        await inbox.record(
            conn,
            provider,
            receipt.event_id,
            outcome.value,
            notification.id if notification else None,
        )
        extra = {
            "provider": provider,
            "event_type": receipt.event_type,
            "outcome": outcome.name,
            "notification_id": str(notification.id) if notification else "",
        }
        if notification is None:
            logger.info("receipt", extra=extra)
        else:
            with traced(notification, "receipt"):  # its event is in that trace too
                logger.info("receipt", extra=extra)
        return outcome, changed
