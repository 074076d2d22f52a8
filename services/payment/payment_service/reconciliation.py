"""Reconciliation: bring payments stuck in an open state to Stripe's state, requeue stuck events.

A payment that stays PENDING / PROCESSING / REQUIRES_ACTION past a threshold usually means a lost
webhook or a crash between the Stripe call and our commit. Each one is fetched from Stripe and
moved through `core.Core.apply_intent` — the same transition code RPCs and webhooks use — so the
ledger and outbox follow exactly as if the webhook had arrived (a capture Stripe made for a
payment closed meanwhile is refunded automatically, as there). Every difference is reported;
nothing is changed in a dry run. Runs as a periodic job (one replica at a time, by a Redis lock)
and on demand through ReconcilePayments.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter

from meshkit.db import Database
from payment_service import convert, store
from payment_service.adapters.stripe_gateway import IntentResult, StripeGateway, StripeRejected
from payment_service.core import Applied, Cause, Core
from payment_service.domain.states import CauseKind, PaymentStatus, from_stripe_intent
from payment_service.payments import Payments
from payment_service.store import PaymentRecord, RefundRecord
from tickettoken.payment.v1 import payment_pb2

logger = logging.getLogger(__name__)

Action = payment_pb2.ReconciliationAction
LOCK_KEY = "payment:reconciliation:lock"


class ReconciliationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.checked = Counter(
            "payment_reconciliation_checked_total",
            "Payments compared with the provider by reconciliation.",
            registry=registry,
        )
        self.discrepancies = Counter(
            "payment_reconciliation_discrepancies_total",
            "Discrepancies found by reconciliation, by action and whether it was applied.",
            ["action", "applied"],
            registry=registry,
        )
        self.requeued = Counter(
            "payment_reconciliation_outbox_requeued_total",
            "Stuck outbox events requeued by reconciliation.",
            registry=registry,
        )


class Reconciler:
    """Compares open payments with Stripe and repairs them (build once at start)."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: StripeGateway,
        core: Core,
        payments: Payments,
        redis: aioredis.Redis,
        registry: CollectorRegistry,
        older_than_s: float,
        batch: int,
        outbox_stuck_after_s: float,
        interval_s: float,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.core = core
        self.payments = payments
        self.redis = redis
        self.metrics = ReconciliationMetrics(registry)
        self.older_than_s = older_than_s
        self.batch = batch
        self.outbox_stuck_after_s = outbox_stuck_after_s
        self.interval_s = interval_s

    async def periodic(self) -> None:
        """One scheduled run, skipped when another replica holds the run lock."""
        token = uuid.uuid4().hex
        lock_ms = max(1000, int(self.interval_s * 1000))
        if not await self.redis.set(LOCK_KEY, token, nx=True, px=lock_ms):
            return
        report = await self.run(
            older_than_s=self.older_than_s, limit=self.batch, dry_run=False, payment_ids=()
        )
        if report.discrepancies:
            logger.warning(
                "reconciliation found discrepancies",
                extra={
                    "checked": report.payments_checked,
                    "updated": report.payments_updated,
                    "requeued": report.outbox_events_requeued,
                    "discrepancies": len(report.discrepancies),
                },
            )

    async def run(
        self,
        *,
        older_than_s: float,
        limit: int,
        dry_run: bool,
        payment_ids: Sequence[uuid.UUID],
        outbox_older_than_s: float | None = None,
    ) -> payment_pb2.ReconcilePaymentsResponse:
        started = datetime.now(UTC)
        run_id = uuid.uuid4().hex[:12]
        async with self.db.acquire() as conn:
            payments = await store.stuck_payments(
                conn, older_than_s=older_than_s, limit=limit, ids=payment_ids
            )
        report = payment_pb2.ReconcilePaymentsResponse(
            dry_run=dry_run, started_at=convert.ts(started)
        )
        for payment in payments:
            report.payments_checked += 1
            self.metrics.checked.inc()
            found = await self._reconcile(payment, dry_run, run_id)
            if found is None:
                continue
            report.discrepancies.append(found)
            self.metrics.discrepancies.labels(
                Action.Name(found.action), str(found.applied).lower()
            ).inc()
            if found.applied and found.action in (
                Action.RECONCILIATION_ACTION_STATUS_UPDATED,
                Action.RECONCILIATION_ACTION_MARKED_FAILED,
            ):
                report.payments_updated += 1
        async with self.db.acquire() as conn:
            refunds = await store.stuck_refunds(
                conn, older_than_s=older_than_s, limit=limit, payment_ids=payment_ids
            )
        for refund in refunds:
            found = await self._reconcile_refund(refund, dry_run, run_id)
            if found is None:
                continue
            report.discrepancies.append(found)
            self.metrics.discrepancies.labels(
                Action.Name(found.action), str(found.applied).lower()
            ).inc()
            if found.applied:
                report.payments_updated += 1
        async with self.db.transaction() as conn:
            requeued = await store.requeue_stuck_outbox(
                conn,
                older_than_s=(
                    self.outbox_stuck_after_s
                    if outbox_older_than_s is None
                    else outbox_older_than_s
                ),
                limit=limit,
                dry_run=dry_run,
            )
        for event_id in requeued:
            report.discrepancies.append(
                payment_pb2.Discrepancy(
                    action=Action.RECONCILIATION_ACTION_OUTBOX_REQUEUED,
                    applied=not dry_run,
                    outbox_event_id=str(event_id),
                    detail="undelivered event in backoff past the threshold",
                )
            )
        if not dry_run:
            report.outbox_events_requeued = len(requeued)
            self.metrics.requeued.inc(len(requeued))
        report.finished_at.CopyFrom(convert.ts(datetime.now(UTC)))
        return report

    async def _reconcile(
        self, payment: PaymentRecord, dry_run: bool, run_id: str
    ) -> payment_pb2.Discrepancy | None:
        found = payment_pb2.Discrepancy(
            payment_id=str(payment.id),
            provider_payment_id=payment.provider_payment_id or "",
            from_status=int(payment.state),  # type: ignore[arg-type]
            to_status=int(payment.state),  # type: ignore[arg-type]
        )
        if not payment.provider_payment_id:
            # Without a PaymentIntent id there is nothing to ask Stripe; only a payment older
            # than the configured threshold is given up (its create call may still be running).
            age = datetime.now(UTC) - payment.updated_at
            if age < timedelta(seconds=self.older_than_s):
                return None
            # No PaymentIntent was ever recorded: the provider has nothing we can fetch.
            result = IntentResult(
                intent_id="",
                status="requires_payment_method",
                failure_code="provider_payment_missing",
                failure_message="The payment never reached the payment provider.",
                declined=True,
            )
            found.action = Action.RECONCILIATION_ACTION_MARKED_FAILED
            found.detail = "no PaymentIntent recorded"
        else:
            try:
                result = await self.gateway.retrieve_intent(payment.provider_payment_id)
            except StripeRejected as exc:
                if not exc.not_found:
                    found.action = Action.RECONCILIATION_ACTION_MANUAL_REVIEW
                    found.detail = f"provider refused the lookup: {exc.code}"
                    return found
                result = IntentResult(
                    intent_id=payment.provider_payment_id,
                    status="requires_payment_method",
                    failure_code="provider_payment_missing",
                    failure_message="The payment provider has no record of this payment.",
                    declined=True,
                )
                found.action = Action.RECONCILIATION_ACTION_MARKED_FAILED
                found.detail = "PaymentIntent not found at the provider"
            except Exception as exc:  # transport failures: report, try again next run
                found.action = Action.RECONCILIATION_ACTION_MANUAL_REVIEW
                found.detail = f"provider lookup failed: {type(exc).__name__}"
                logger.warning(
                    "reconciliation lookup failed",
                    extra={"payment_id": str(payment.id), "error": repr(exc)},
                )
                return found
            found.provider_status = result.status
            target = from_stripe_intent(result.status)
            if not found.action:
                if target is None or target in (payment.state, PaymentStatus.PENDING):
                    return None
                found.action = Action.RECONCILIATION_ACTION_STATUS_UPDATED
        target = PaymentStatus.FAILED if result.declined else from_stripe_intent(result.status)
        assert target is not None
        found.to_status = int(target)  # type: ignore[assignment]
        if dry_run:
            return found
        cause = Cause(CauseKind.RECONCILIATION, run_id)
        async with self.db.transaction() as conn:
            locked = await store.get_payment(conn, payment.id, for_update=True)
            assert locked is not None
            moved, applied = await self.core.apply_intent(conn, locked, result, cause)
        found.from_status = int(locked.state)  # type: ignore[assignment]
        if applied is Applied.LATE_CAPTURE:
            # Closed here while we asked Stripe, which captured it: the money goes back.
            moved = await self.payments.refund_late_capture(moved.id, locked.state, cause)
            found.applied = True
            found.detail = f"captured after the payment was {locked.status}: refunded automatically"
        elif applied is Applied.CHANGED:
            found.applied = True
        elif applied is Applied.REFUSED:
            found.action = Action.RECONCILIATION_ACTION_MANUAL_REVIEW
            found.detail = (
                f"provider says {result.status or 'nothing'}, but {locked.status} cannot move "
                f"to {target.name}"
            )
        else:
            found.applied = True
            found.detail = "already up to date"
        found.to_status = int(moved.state)  # type: ignore[assignment]
        return found

    async def _reconcile_refund(
        self, refund: RefundRecord, dry_run: bool, run_id: str
    ) -> payment_pb2.Discrepancy | None:
        """A refund still waiting for Stripe's answer: ask Stripe (or, if the create call never
        came back, send it again with the same Idempotency-Key) and apply the answer."""
        async with self.db.acquire() as conn:
            payment = await store.get_payment(conn, refund.payment_id)
        assert payment is not None
        found = payment_pb2.Discrepancy(
            payment_id=str(payment.id),
            provider_payment_id=payment.provider_payment_id or "",
            from_status=int(payment.state),  # type: ignore[arg-type]
            to_status=int(payment.state),  # type: ignore[arg-type]
            action=Action.RECONCILIATION_ACTION_STATUS_UPDATED,
        )
        if dry_run:
            found.detail = f"refund {refund.id} is {refund.status}; would ask the provider"
            return found
        cause = Cause(CauseKind.RECONCILIATION, run_id)
        try:
            if refund.provider_refund_id:
                result = await self.gateway.retrieve_refund(refund.provider_refund_id)
                updated = await self.payments.apply_refund_result(
                    payment.id,
                    refund.id,
                    result.status,
                    result.refund_id,
                    result.failure_reason,
                    cause,
                )
            else:
                updated = await self.payments.send_refund(payment, refund, cause)
        except Exception as exc:  # transport failures: report, try again next run
            found.action = Action.RECONCILIATION_ACTION_MANUAL_REVIEW
            found.detail = f"refund {refund.id}: provider call failed: {type(exc).__name__}"
            return found
        if updated.state is refund.state:
            return None
        async with self.db.acquire() as conn:
            after = await store.get_payment(conn, payment.id)
        assert after is not None
        found.to_status = int(after.state)  # type: ignore[assignment]
        found.provider_status = updated.status.lower()
        found.applied = True
        found.detail = f"refund {refund.id}: {refund.status} -> {updated.status}"
        return found
