"""Stripe webhooks (HTTP `POST /webhooks/stripe` and gRPC `HandleProviderWebhook` alike).

1. The signature and timestamp are verified with the SDK (300 s tolerance, both directions).
2. In ONE settlement transaction: the event is claimed in the inbox by its id (a row lock, so
   concurrent deliveries of one event serialise), its result is settled (the same step RPCs and
   reconciliation use) and the inbox row is marked processed. A duplicate delivery finds it
   processed and changes nothing.
3. Any processing error rolls all of that back, records the error on the inbox row, and answers
   `WebhookNotProcessed` (HTTP 503 / gRPC UNAVAILABLE) so Stripe delivers again later.

Out-of-order events are harmless: the state machine only moves forward, so a stale
`requires_action` after `succeeded` is acknowledged and ignored. Unknown types are acknowledged.
A `payment_intent.succeeded` for a payment closed here is a late capture, which settlement
charges and refunds (after the commit); a redelivery is a duplicate, and another event announcing
the same success finds the payment captured already: the money is refunded once.

A PaymentIntent's result is settled in the trace of the CreatePayment request that created the
payment (the intent's `traceparent`/`tracestate` metadata, else the one stored with the payment),
not the delivery's own: PaymentSucceeded from a 3-D Secure or async payment, and the settlement's
log lines, stay in the purchase's trace.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from opentelemetry.trace import Span
from prometheus_client import CollectorRegistry, Counter, Histogram

from meshkit.db import Database
from meshkit.tracing import TRACEPARENT, TRACESTATE, continue_trace, parse_traceparent
from payment_service.adapters.stripe_gateway import (
    StripeGateway,
    WebhookRejected,
    intent_result,
    payout_result,
)
from payment_service.domain import ids
from payment_service.domain.errors import Violation, WebhookNotProcessed, WebhookUnverified
from payment_service.domain.model import Payment, RefundReason
from payment_service.domain.provider import RefundResult
from payment_service.domain.settlement import Applied, Cause, RefundHold
from payment_service.domain.states import STRIPE_INTENT_EVENTS, CauseKind, RefundStatus
from payment_service.store import inbox, payments, payouts, refunds
from payment_service.usecases.settlement import Session, Settlement

logger = logging.getLogger(__name__)

REFUND_EVENTS = frozenset(
    {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
)
PAYOUT_EVENTS = frozenset({"payout.paid", "payout.failed", "payout.canceled", "payout.updated"})
# Where a rejected delivery went wrong, as paths of HandleProviderWebhookRequest.
SIGNATURE_FIELD = 'webhook.headers["stripe-signature"]'
BODY_FIELD = "webhook.payload"


class Outcome(enum.StrEnum):
    """What a delivery did (values: the contract's WebhookStatus names, kept in the inbox)."""

    PROCESSED = "WEBHOOK_STATUS_PROCESSED"
    DUPLICATE = "WEBHOOK_STATUS_DUPLICATE"
    IGNORED = "WEBHOOK_STATUS_IGNORED"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A webhook as it arrived: the raw body and the headers (names in lower case)."""

    payload: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Handled:
    event_id: str
    event_type: str
    outcome: Outcome
    payment_id: uuid.UUID | None


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "payment_webhooks_total",
            "Stripe webhook deliveries by outcome.",
            ["event_type", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "payment_webhook_processing_seconds",
            "Time from receipt to committed state of a webhook.",
            registry=registry,
        )


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError):
        return None


def _id(value: object) -> str:
    """An expandable field: an id string, or an object with an id."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = obj.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


@contextlib.contextmanager
def _in_payment_trace(
    payment: Payment, metadata: Mapping[str, Any], event_type: str
) -> Iterator[Span | None]:
    """Run the block in a span of the payment's trace (module doc); in the delivery's own span
    when the payment has none."""
    traceparent, tracestate = payment.traceparent, payment.tracestate
    stated = str(metadata.get(TRACEPARENT) or "")
    if stated and parse_traceparent(stated) is not None:
        traceparent, tracestate = stated, str(metadata.get(TRACESTATE) or "")
    if not traceparent:
        yield None
        return
    with continue_trace(
        traceparent,
        tracestate or None,
        name="settle payment intent",
        attributes={"payment.id": str(payment.id), "stripe.event_type": event_type},
    ) as span:
        yield span


class Webhooks:
    """Verifies and processes Stripe events (build once at start)."""

    def __init__(
        self,
        *,
        db: Database,
        settlement: Settlement,
        secret: str,
        tolerance_s: int,
        lock_timeout_ms: int,
        registry: CollectorRegistry,
    ) -> None:
        self.db = db
        self.settlement = settlement
        self._secret = secret
        self.tolerance_s = tolerance_s
        self.lock_timeout_ms = int(lock_timeout_ms)
        self.metrics = WebhookMetrics(registry)

    async def handle(self, delivery: Delivery) -> Handled:
        """Verify and process one delivery."""
        started = time.perf_counter()
        try:
            event = StripeGateway.verify_webhook(
                delivery.payload,
                delivery.headers.get("stripe-signature", ""),
                self._secret,
                self.tolerance_s,
            )
        except WebhookRejected as exc:
            self.metrics.received.labels("unverified", "rejected").inc()
            logger.warning("webhook rejected", extra={"error": str(exc)})
            field = BODY_FIELD if exc.in_body else SIGNATURE_FIELD
            raise WebhookUnverified(
                f"webhook signature rejected: {exc}", Violation(field, str(exc))
            ) from None
        event_id = str(event["id"])
        event_type = str(event["type"])
        try:
            outcome, payment_id = await self._process(event_id, event_type, event, delivery)
        except Exception as exc:
            self.metrics.received.labels(event_type, "failed").inc()
            logger.exception(
                "webhook processing failed; Stripe will retry",
                extra={"event_id": event_id, "event_type": event_type},
            )
            try:
                # Outside the rolled-back transaction: keep the event and its error for operators.
                async with self.db.acquire() as conn:
                    await inbox.record_failure(
                        conn,
                        event_id,
                        event_type,
                        delivery.payload,
                        f"{type(exc).__name__}: {exc}",
                    )
            except Exception:
                logger.warning("could not record the webhook failure", exc_info=True)
            raise WebhookNotProcessed("webhook processing failed; deliver again later") from None
        self.metrics.received.labels(event_type, outcome.value).inc()
        self.metrics.seconds.observe(time.perf_counter() - started)
        return Handled(event_id, event_type, outcome, payment_id)

    async def _process(
        self, event_id: str, event_type: str, event: Mapping[str, Any], delivery: Delivery
    ) -> tuple[Outcome, uuid.UUID | None]:
        """One settlement session: claim, settle, mark processed (module doc)."""
        async with self.settlement.session(Cause(CauseKind.WEBHOOK, event_id)) as s:
            # A row held by a slow writer must not hold the delivery for long: fail fast (the
            # claim sets the transaction's lock_timeout) and let Stripe retry instead of timing
            # out its HTTP request.
            processed_at = await inbox.claim(
                s.conn, event_id, event_type, delivery.payload, lock_timeout_ms=self.lock_timeout_ms
            )
            if processed_at is not None:
                return Outcome.DUPLICATE, None
            obj = (event.get("data") or {}).get("object") or {}
            if event_type in STRIPE_INTENT_EVENTS:
                outcome, payment_id = await self._intent(s, obj, event_type)
            elif event_type == "charge.refunded":
                outcome, payment_id = await self._charge_refunded(s, obj)
            elif event_type in REFUND_EVENTS:
                outcome, payment_id = await self._refund(s, obj)
            elif event_type == "charge.dispute.created":
                outcome, payment_id = await self._dispute(s, obj)
            elif event_type in PAYOUT_EVENTS:
                outcome, payment_id = await self._payout(s, obj)
            else:
                outcome, payment_id = Outcome.IGNORED, None
            await inbox.mark_processed(s.conn, event_id, outcome.value, payment_id)
        return outcome, payment_id

    @staticmethod
    async def _payment_for(
        conn: asyncpg.Connection,
        *,
        metadata: Mapping[str, Any],
        intent_id: str,
        charge_id: str = "",
    ) -> Payment | None:
        payment_id = _uuid(metadata.get("payment_id"))
        if payment_id is not None:
            payment = await payments.get(conn, payment_id, for_update=True)
            if payment is not None:
                return payment
        if intent_id:
            payment = await payments.find_by_provider_id(conn, intent_id, for_update=True)
            if payment is not None:
                return payment
        if charge_id:
            return await payments.find_by_charge(conn, charge_id, for_update=True)
        return None

    async def _intent(
        self, s: Session, obj: Mapping[str, Any], event_type: str
    ) -> tuple[Outcome, uuid.UUID | None]:
        result = intent_result(obj)
        metadata = _metadata(obj)
        payment = await self._payment_for(s.conn, metadata=metadata, intent_id=result.intent_id)
        if payment is None:
            return Outcome.IGNORED, None
        with _in_payment_trace(payment, metadata, event_type):
            moved, applied = await s.apply_intent(payment, result)
            logger.info(
                "payment intent settled by webhook",
                extra={
                    "payment_id": str(payment.id),
                    "event_type": event_type,
                    "applied": applied.name,
                    "status": moved.status.name,
                },
            )
        return (Outcome.IGNORED if applied is Applied.REFUSED else Outcome.PROCESSED), payment.id

    async def _charge_refunded(
        self, s: Session, charge: Mapping[str, Any]
    ) -> tuple[Outcome, uuid.UUID | None]:
        payment = await self._payment_for(
            s.conn,
            metadata=_metadata(charge),
            intent_id=_id(charge.get("payment_intent")),
            charge_id=_id(charge),
        )
        if payment is None:
            return Outcome.IGNORED, None
        listed = (charge.get("refunds") or {}).get("data") or []
        if not listed:
            # Newer API versions leave the list out; our own refunds are recorded when created,
            # and per-refund events (charge.refund.updated) carry the rest.
            return Outcome.IGNORED, payment.id
        changed = False
        for obj in sorted(listed, key=lambda r: int(r.get("created") or 0)):
            payment, applied = await self._apply_refund_object(s, payment, obj)
            changed = changed or applied is Applied.CHANGED
        return (Outcome.PROCESSED if changed else Outcome.IGNORED), payment.id

    async def _refund(self, s: Session, obj: Mapping[str, Any]) -> tuple[Outcome, uuid.UUID | None]:
        payment = await self._payment_for(
            s.conn,
            metadata=_metadata(obj),
            intent_id=_id(obj.get("payment_intent")),
            charge_id=_id(obj.get("charge")),
        )
        if payment is None:
            return Outcome.IGNORED, None
        _, applied = await self._apply_refund_object(s, payment, obj)
        return (
            Outcome.PROCESSED if applied is not Applied.REFUSED else Outcome.IGNORED
        ), payment.id

    async def _apply_refund_object(
        self, s: Session, payment: Payment, obj: Mapping[str, Any]
    ) -> tuple[Payment, Applied]:
        result = RefundResult(
            refund_id=_id(obj),
            status=str(obj.get("status") or "pending"),
            failure_reason=str(obj.get("failure_reason") or ""),
        )
        ours = await refunds.find_by_provider_id(s.conn, result.refund_id, for_update=True)
        if ours is None:
            refund_id = _uuid(_metadata(obj).get("refund_id"))
            if refund_id is not None:
                ours = await refunds.get(s.conn, refund_id, for_update=True)
                if ours is not None and ours.payment_id != payment.id:
                    ours = None
        if ours is None:
            # A refund made outside this service (e.g. the Stripe dashboard): record it so the
            # ledger and the refundable remainder match Stripe.
            amount = int(obj.get("amount") or 0)
            if result.status != "succeeded" or amount <= 0:
                return payment, Applied.UNCHANGED
            if amount > payment.refundable:
                logger.error(
                    "external refund exceeds the refundable remainder",
                    extra={"payment_id": str(payment.id), "refund": result.refund_id},
                )
                return payment, Applied.REFUSED
            payment, ours = await s.hold_refund(
                payment,
                RefundHold(
                    refund_id=ids.external_refund_id(result.refund_id),
                    amount=amount,
                    reason=RefundReason.OTHER,
                    note="refunded at Stripe",
                    ticket_ids=(),
                    created_by="stripe",
                    provider_refund_id=result.refund_id,
                ),
            )
        if ours.status is RefundStatus.SUCCEEDED and result.status == "succeeded":
            return payment, Applied.UNCHANGED
        payment, _, applied = await s.apply_refund(payment, ours, result)
        return payment, applied

    async def _dispute(
        self, s: Session, dispute: Mapping[str, Any]
    ) -> tuple[Outcome, uuid.UUID | None]:
        payment = await self._payment_for(
            s.conn,
            metadata={},
            intent_id=_id(dispute.get("payment_intent")),
            charge_id=_id(dispute.get("charge")),
        )
        if payment is None:
            return Outcome.IGNORED, None
        _, applied = await s.apply_dispute(payment, _id(dispute), int(dispute.get("amount") or 0))
        return (Outcome.IGNORED if applied is Applied.REFUSED else Outcome.PROCESSED), payment.id

    async def _payout(self, s: Session, obj: Mapping[str, Any]) -> tuple[Outcome, uuid.UUID | None]:
        payout = await payouts.find_by_provider_id(s.conn, _id(obj), for_update=True)
        if payout is None:
            payout_id = _uuid(_metadata(obj).get("payout_id"))
            if payout_id is not None:
                payout = await payouts.get(s.conn, payout_id, for_update=True)
        if payout is None:
            return Outcome.IGNORED, None
        await s.apply_payout(payout, payout_result(obj))
        return Outcome.PROCESSED, None
