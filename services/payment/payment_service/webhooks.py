"""Stripe webhooks: HTTP `POST /webhooks/stripe` and gRPC `HandleProviderWebhook`, one code path.

1. The signature and timestamp are verified with the SDK (300 s tolerance, both directions).
2. In ONE transaction: the event is claimed in the inbox by its id (a row lock, so concurrent
   deliveries of one event serialise), the state change, ledger posting and outbox event are
   written through `core.Core` (the code RPCs and reconciliation use), and the inbox row is
   marked processed. A duplicate delivery finds it processed and changes nothing.
3. Any processing error rolls all of that back, records the error on the inbox row, and answers
   non-2xx (HTTP 503 / gRPC UNAVAILABLE) so Stripe delivers again later.

Out-of-order events are harmless: the state machine only moves forward, so a stale
`requires_action` after `succeeded` is acknowledged and ignored. Unknown types are acknowledged.

A `payment_intent.succeeded` for a payment closed here (CANCELLED or FAILED) is a late capture:
step 2 charges it and holds a full refund (`core.Core`), and once that transaction has committed
the refund is sent to Stripe (`payments.Payments.refund_late_capture`). A redelivery of the event
is a duplicate, and another event announcing the same success finds the payment captured
already: the money is refunded once.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from meshkit.db import Database
from meshkit.errors import InvalidArgument, MeshError, Unavailable
from payment_service import store
from payment_service.adapters.stripe_gateway import (
    StripeGateway,
    WebhookRejected,
    intent_result,
    payout_result,
)
from payment_service.convert import derive_id, ts
from payment_service.core import Applied, Cause, Core
from payment_service.domain.states import (
    STRIPE_INTENT_EVENTS,
    CauseKind,
    PaymentStatus,
    RefundStatus,
)
from payment_service.payments import Payments
from payment_service.payouts import Payouts
from payment_service.store import PaymentRecord
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2

logger = logging.getLogger(__name__)

Status: TypeAlias = common_pb2.WebhookStatus.ValueType
PROCESSED = common_pb2.WEBHOOK_STATUS_PROCESSED
DUPLICATE = common_pb2.WEBHOOK_STATUS_DUPLICATE
IGNORED = common_pb2.WEBHOOK_STATUS_IGNORED

REFUND_EVENTS = frozenset(
    {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
)
PAYOUT_EVENTS = frozenset({"payout.paid", "payout.failed", "payout.canceled", "payout.updated"})


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


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError):
        return None


class Webhooks:
    """Verifies and processes Stripe events (build once at start)."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: StripeGateway,
        core: Core,
        payments: Payments,
        payouts: Payouts,
        secret: str,
        tolerance_s: int,
        lock_timeout_ms: int,
        registry: CollectorRegistry,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.core = core
        self.payments = payments
        self.payouts = payouts
        self._secret = secret
        self.tolerance_s = tolerance_s
        self.lock_timeout_ms = int(lock_timeout_ms)
        self.metrics = WebhookMetrics(registry)

    # -- entry points ---------------------------------------------------------------------------

    async def handle(
        self, webhook: common_pb2.ProviderWebhook
    ) -> payment_pb2.HandleProviderWebhookResponse:
        """Verify and process one delivery (the gRPC method and the HTTP route both call this)."""
        started = time.perf_counter()
        if webhook.provider and webhook.provider != "stripe":
            raise InvalidArgument(
                "this endpoint takes Stripe webhooks only", reason="WEBHOOK_PROVIDER_UNSUPPORTED"
            )
        headers = {k.lower(): v for k, v in webhook.headers.items()}
        try:
            event = self.gateway.verify_webhook(
                webhook.payload, headers.get("stripe-signature", ""), self._secret, self.tolerance_s
            )
        except WebhookRejected as exc:
            self.metrics.received.labels("unverified", "rejected").inc()
            logger.warning("webhook rejected", extra={"error": str(exc)})
            raise InvalidArgument(
                f"webhook signature rejected: {exc}", reason="WEBHOOK_SIGNATURE_INVALID"
            ) from None
        event_id = str(event["id"])
        event_type = str(event["type"])
        try:
            status, payment_id, late_capture = await self._process(
                event_id, event_type, event, webhook.payload
            )
        except Exception as exc:
            self.metrics.received.labels(event_type, "failed").inc()
            logger.exception(
                "webhook processing failed; Stripe will retry",
                extra={"event_id": event_id, "event_type": event_type},
            )
            try:
                # Outside the rolled-back transaction: keep the event and its error for operators.
                async with self.db.acquire() as conn:
                    await store.record_event_failure(
                        conn, event_id, event_type, webhook.payload, f"{type(exc).__name__}: {exc}"
                    )
            except Exception:
                logger.warning("could not record the webhook failure", exc_info=True)
            raise Unavailable(
                "webhook processing failed; deliver again later",
                reason="WEBHOOK_PROCESSING_FAILED",
                retry_after=1.0,
            ) from None
        if late_capture is not None and payment_id is not None:
            # After the commit: the event is processed whatever happens to this call, and a
            # refund that is not sent now is sent by reconciliation (same Idempotency-Key).
            try:
                await self.payments.refund_late_capture(
                    payment_id, late_capture, Cause(CauseKind.WEBHOOK, event_id)
                )
            except Exception:
                logger.exception(
                    "automatic refund of a late capture failed; reconciliation will send it",
                    extra={"event_id": event_id, "payment_id": str(payment_id)},
                )
        self.metrics.received.labels(event_type, common_pb2.WebhookStatus.Name(status)).inc()
        self.metrics.seconds.observe(time.perf_counter() - started)
        return payment_pb2.HandleProviderWebhookResponse(
            event_id=event_id,
            event_type=event_type,
            status=status,
            payment_id=str(payment_id) if payment_id else "",
        )

    async def http(self, request: web.Request) -> web.Response:
        """aiohttp handler for POST /webhooks/stripe."""
        webhook = common_pb2.ProviderWebhook(
            provider="stripe",
            payload=await request.read(),
            headers={k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers},
            url=str(request.url),
            http_method=request.method,
            received_at=ts(datetime.now(UTC)),
            remote_address=request.remote or "",
        )
        try:
            response = await self.handle(webhook)
        except InvalidArgument as exc:
            return web.json_response({"error": exc.reason, "message": exc.message}, status=400)
        except MeshError as exc:
            return web.json_response({"error": exc.reason}, status=503)
        return web.json_response(
            {
                "event_id": response.event_id,
                "status": common_pb2.WebhookStatus.Name(response.status),
                "payment_id": response.payment_id,
            }
        )

    # -- processing -----------------------------------------------------------------------------

    async def _process(
        self, event_id: str, event_type: str, event: dict[str, Any], payload: bytes
    ) -> tuple[Status, uuid.UUID | None, PaymentStatus | None]:
        """Process the event in one transaction; the third value is the closed state of a
        payment this event found late-captured (its refund is sent after the commit)."""
        cause = Cause(CauseKind.WEBHOOK, event_id)
        late_capture: PaymentStatus | None = None
        async with self.db.transaction() as conn:
            # A row held by a slow writer must not hold the delivery for long: fail fast (the
            # claim sets the transaction's lock_timeout) and let Stripe retry instead of timing
            # out its HTTP request.
            claimed = await store.claim_event(
                conn, event_id, event_type, payload, lock_timeout_ms=self.lock_timeout_ms
            )
            if claimed is not None:
                return DUPLICATE, None, None
            obj = (event.get("data") or {}).get("object") or {}
            if event_type in STRIPE_INTENT_EVENTS:
                status, payment_id, late_capture = await self._intent(conn, obj, cause)
            elif event_type == "charge.refunded":
                status, payment_id = await self._charge_refunded(conn, obj, cause)
            elif event_type in REFUND_EVENTS:
                status, payment_id = await self._refund(conn, obj, cause)
            elif event_type == "charge.dispute.created":
                status, payment_id = await self._dispute(conn, obj, cause)
            elif event_type in PAYOUT_EVENTS:
                status, payment_id = await self._payout(conn, obj, cause)
            else:
                status, payment_id = IGNORED, None
            await store.mark_event_processed(
                conn, event_id, common_pb2.WebhookStatus.Name(status), payment_id
            )
        return status, payment_id, late_capture

    async def _payment_for(
        self, conn: asyncpg.Connection, *, metadata: Any, intent_id: str, charge_id: str = ""
    ) -> PaymentRecord | None:
        payment_id = _uuid(metadata.get("payment_id")) if isinstance(metadata, dict) else None
        if payment_id is not None:
            payment = await store.get_payment(conn, payment_id, for_update=True)
            if payment is not None:
                return payment
        if intent_id:
            payment = await store.find_payment_by_provider_id(conn, intent_id, for_update=True)
            if payment is not None:
                return payment
        if charge_id:
            return await store.find_payment_by_charge(conn, charge_id, for_update=True)
        return None

    async def _intent(
        self, conn: asyncpg.Connection, obj: dict[str, Any], cause: Cause
    ) -> tuple[Status, uuid.UUID | None, PaymentStatus | None]:
        result = intent_result(obj)
        payment = await self._payment_for(
            conn, metadata=obj.get("metadata"), intent_id=result.intent_id
        )
        if payment is None:
            return IGNORED, None, None
        _, applied = await self.core.apply_intent(conn, payment, result, cause)
        late_capture = payment.state if applied is Applied.LATE_CAPTURE else None
        return (IGNORED if applied is Applied.REFUSED else PROCESSED), payment.id, late_capture

    async def _charge_refunded(
        self, conn: asyncpg.Connection, charge: dict[str, Any], cause: Cause
    ) -> tuple[Status, uuid.UUID | None]:
        intent_id = _id(charge.get("payment_intent"))
        payment = await self._payment_for(
            conn, metadata=charge.get("metadata"), intent_id=intent_id, charge_id=_id(charge)
        )
        if payment is None:
            return IGNORED, None
        refunds = (charge.get("refunds") or {}).get("data") or []
        if not refunds:
            # Newer API versions leave the list out; our own refunds are recorded when created,
            # and per-refund events (charge.refund.updated) carry the rest.
            return IGNORED, payment.id
        changed = False
        for refund in sorted(refunds, key=lambda r: int(r.get("created") or 0)):
            payment, applied = await self._apply_refund_object(conn, payment, refund, cause)
            changed = changed or applied is Applied.CHANGED
        return (PROCESSED if changed else IGNORED), payment.id

    async def _refund(
        self, conn: asyncpg.Connection, refund: dict[str, Any], cause: Cause
    ) -> tuple[Status, uuid.UUID | None]:
        payment = await self._payment_for(
            conn,
            metadata=refund.get("metadata"),
            intent_id=_id(refund.get("payment_intent")),
            charge_id=_id(refund.get("charge")),
        )
        if payment is None:
            return IGNORED, None
        _, applied = await self._apply_refund_object(conn, payment, refund, cause)
        return (PROCESSED if applied is not Applied.REFUSED else IGNORED), payment.id

    async def _apply_refund_object(
        self,
        conn: asyncpg.Connection,
        payment: PaymentRecord,
        obj: dict[str, Any],
        cause: Cause,
    ) -> tuple[PaymentRecord, Applied]:
        provider_id = _id(obj)
        status = str(obj.get("status") or "pending")
        ours = await store.find_refund_by_provider_id(conn, provider_id, for_update=True)
        if ours is None:
            refund_id = _uuid((obj.get("metadata") or {}).get("refund_id"))
            if refund_id is not None:
                ours = await store.get_refund(conn, refund_id, for_update=True)
                if ours is not None and ours.payment_id != payment.id:
                    ours = None
        if ours is None:
            # A refund made outside this service (e.g. the Stripe dashboard): record it so the
            # ledger and the refundable remainder match Stripe.
            amount = int(obj.get("amount") or 0)
            if status != "succeeded" or amount <= 0:
                return payment, Applied.UNCHANGED
            if amount > payment.refundable:
                logger.error(
                    "external refund exceeds the refundable remainder",
                    extra={"payment_id": str(payment.id), "refund": provider_id},
                )
                return payment, Applied.REFUSED
            payment, ours = await self.core.new_refund(
                conn,
                payment,
                refund_id=derive_id("stripe-refund", provider_id),
                amount=amount,
                reason=payment_pb2.REFUND_REASON_OTHER,
                note="refunded at Stripe",
                ticket_ids=[],
                created_by="stripe",
                provider_refund_id=provider_id,
            )
        if ours.state is RefundStatus.SUCCEEDED and status == "succeeded":
            return payment, Applied.UNCHANGED
        payment, _, applied = await self.core.apply_refund(
            conn,
            payment,
            ours,
            provider_status=status,
            provider_refund_id=provider_id,
            failure_reason=str(obj.get("failure_reason") or ""),
            cause=cause,
        )
        return payment, applied

    async def _dispute(
        self, conn: asyncpg.Connection, dispute: dict[str, Any], cause: Cause
    ) -> tuple[Status, uuid.UUID | None]:
        payment = await self._payment_for(
            conn,
            metadata=None,
            intent_id=_id(dispute.get("payment_intent")),
            charge_id=_id(dispute.get("charge")),
        )
        if payment is None:
            return IGNORED, None
        _, applied = await self.core.apply_dispute(
            conn,
            payment,
            dispute_id=_id(dispute),
            amount=int(dispute.get("amount") or 0),
            cause=cause,
        )
        return (IGNORED if applied is Applied.REFUSED else PROCESSED), payment.id

    async def _payout(
        self, conn: asyncpg.Connection, obj: dict[str, Any], cause: Cause
    ) -> tuple[Status, uuid.UUID | None]:
        payout = await store.find_payout_by_provider_id(conn, _id(obj), for_update=True)
        if payout is None:
            payout_id = _uuid((obj.get("metadata") or {}).get("payout_id"))
            if payout_id is not None:
                payout = await store.get_payout(conn, payout_id, for_update=True)
        if payout is None:
            return IGNORED, None
        await self.payouts.apply(
            conn, payout, payout_result(obj), cause=f"{cause.kind.value}:{cause.ref}"
        )
        return PROCESSED, None


def _id(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


__all__ = ["Webhooks"]
