"""Reconciliation: bring payments and refunds stuck in an open state to Stripe's state, and make
stuck outbox events due again.

A payment that stays PENDING / PROCESSING / REQUIRES_ACTION past a threshold usually means a lost
webhook or a crash between the Stripe call and our commit. Each one is fetched from Stripe and
settled (`settlement.settle_intent`) — the step RPCs and webhooks use — so the ledger and events
follow exactly as if the webhook had arrived (a capture Stripe made for a payment closed
meanwhile is refunded automatically, as there). A refund still waiting for Stripe's answer is
asked for (or, if its create never came back, sent again with the same Idempotency-Key). Every
difference is reported; nothing is changed in a dry run. Runs as a leased job (one replica at a
time, `jobs.reconciliation`) and on demand through ReconcilePayments.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from meshkit.db import Database
from meshkit.outbox import requeue_stuck
from payment_service.adapters.stripe_gateway import StripeGateway, StripeRejected
from payment_service.domain import provider
from payment_service.domain.model import Payment, Refund
from payment_service.domain.provider import IntentResult
from payment_service.domain.settlement import Applied, Cause, intent_target
from payment_service.domain.states import CauseKind, PaymentStatus
from payment_service.store import payments, refunds
from payment_service.usecases.settlement import Settlement

logger = logging.getLogger(__name__)


class Action(enum.IntEnum):
    """What was done about a discrepancy (numbers match the contract's ReconciliationAction)."""

    STATUS_UPDATED = 1
    OUTBOX_REQUEUED = 2
    MARKED_FAILED = 3
    MANUAL_REVIEW = 4


@dataclass(slots=True)
class Discrepancy:
    payment_id: str = ""
    provider_payment_id: str = ""
    from_status: PaymentStatus | None = None
    to_status: PaymentStatus | None = None
    provider_status: str = ""
    action: Action | None = None
    applied: bool = False
    outbox_event_id: str = ""
    detail: str = ""


@dataclass(slots=True)
class Report:
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    payments_checked: int = 0
    payments_updated: int = 0
    outbox_events_requeued: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReconciliationRules:
    older_than_s: float
    batch: int
    outbox_stuck_after_s: float


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

    def found(self, d: Discrepancy) -> None:
        action = d.action.name if d.action is not None else "UNSPECIFIED"
        self.discrepancies.labels(f"RECONCILIATION_ACTION_{action}", str(d.applied).lower()).inc()


class Reconciliation:
    """Compares open payments and refunds with Stripe and repairs them (build once at start)."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: StripeGateway,
        settlement: Settlement,
        rules: ReconciliationRules,
        registry: CollectorRegistry,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.settlement = settlement
        self.rules = rules
        self.metrics = ReconciliationMetrics(registry)

    async def periodic(self) -> None:
        """One scheduled run with the configured thresholds."""
        report = await self.run(dry_run=False)
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
        dry_run: bool,
        payment_ids: Sequence[uuid.UUID] = (),
        older_than_s: float | None = None,
        limit: int | None = None,
    ) -> Report:
        """Reconcile stuck payments (the listed ones whatever their age, else those unchanged
        for `older_than_s`, default the configured threshold), stuck refunds and stuck outbox
        events (older than `older_than_s`, default their own threshold)."""
        threshold = (
            older_than_s
            if older_than_s is not None
            else (0.0 if payment_ids else self.rules.older_than_s)
        )
        batch = limit or self.rules.batch
        report = Report(dry_run=dry_run, started_at=datetime.now(UTC))
        run_id = uuid.uuid4().hex[:12]
        async with self.db.acquire() as conn:
            stuck = await payments.stuck(conn, older_than_s=threshold, limit=batch, ids=payment_ids)
        for payment in stuck:
            report.payments_checked += 1
            self.metrics.checked.inc()
            found = await self._reconcile(payment, dry_run, run_id)
            if found is None:
                continue
            report.discrepancies.append(found)
            self.metrics.found(found)
            if found.applied and found.action in (Action.STATUS_UPDATED, Action.MARKED_FAILED):
                report.payments_updated += 1
        async with self.db.acquire() as conn:
            waiting = await refunds.stuck(
                conn, older_than_s=threshold, limit=batch, payment_ids=payment_ids
            )
        for refund in waiting:
            found = await self._reconcile_refund(refund, dry_run, run_id)
            if found is None:
                continue
            report.discrepancies.append(found)
            self.metrics.found(found)
            if found.applied:
                report.payments_updated += 1
        requeued = await requeue_stuck(
            self.db,
            older_than_s=(
                older_than_s if older_than_s is not None else self.rules.outbox_stuck_after_s
            ),
            limit=batch,
            dry_run=dry_run,
        )
        for event_id in requeued:
            report.discrepancies.append(
                Discrepancy(
                    action=Action.OUTBOX_REQUEUED,
                    applied=not dry_run,
                    outbox_event_id=str(event_id),
                    detail="undelivered event in backoff past the threshold",
                )
            )
        if not dry_run:
            report.outbox_events_requeued = len(requeued)
            self.metrics.requeued.inc(len(requeued))
        report.finished_at = datetime.now(UTC)
        return report

    async def _reconcile(self, payment: Payment, dry_run: bool, run_id: str) -> Discrepancy | None:
        found = Discrepancy(
            payment_id=str(payment.id),
            provider_payment_id=payment.provider_payment_id or "",
            from_status=payment.status,
            to_status=payment.status,
        )
        result: IntentResult
        if not payment.provider_payment_id:
            # Without a PaymentIntent id there is nothing to ask Stripe; only a payment older
            # than the configured threshold is given up (its create call may still be running).
            age = datetime.now(UTC) - payment.updated_at
            if age < timedelta(seconds=self.rules.older_than_s):
                return None
            result = provider.never_reached("", "The payment never reached the payment provider.")
            found.action = Action.MARKED_FAILED
            found.detail = "no PaymentIntent recorded"
        else:
            try:
                result = await self.gateway.retrieve_intent(payment.provider_payment_id)
            except StripeRejected as exc:
                if not exc.not_found:
                    found.action = Action.MANUAL_REVIEW
                    found.detail = f"provider refused the lookup: {exc.code}"
                    return found
                result = provider.never_reached(
                    payment.provider_payment_id,
                    "The payment provider has no record of this payment.",
                )
                found.action = Action.MARKED_FAILED
                found.detail = "PaymentIntent not found at the provider"
            except Exception as exc:  # transport failures: report, try again next run
                found.action = Action.MANUAL_REVIEW
                found.detail = f"provider lookup failed: {type(exc).__name__}"
                logger.warning(
                    "reconciliation lookup failed",
                    extra={"payment_id": str(payment.id), "error": repr(exc)},
                )
                return found
            found.provider_status = result.status
            if found.action is None:
                said = intent_target(result)
                if said is None or said in (payment.status, PaymentStatus.PENDING):
                    return None
                found.action = Action.STATUS_UPDATED
        target = intent_target(result)
        assert target is not None
        found.to_status = target
        if dry_run:
            return found
        settled = await self.settlement.settle_intent(
            payment.id, result, Cause(CauseKind.RECONCILIATION, run_id)
        )
        found.from_status = settled.before.status
        if settled.applied is Applied.LATE_CAPTURE:
            # Closed here while we asked Stripe, which captured it: the money went back.
            found.applied = True
            found.detail = (
                f"captured after the payment was {settled.before.status.name}: "
                "refunded automatically"
            )
        elif settled.applied is Applied.CHANGED:
            found.applied = True
        elif settled.applied is Applied.REFUSED:
            found.action = Action.MANUAL_REVIEW
            found.detail = (
                f"provider says {result.status or 'nothing'}, but "
                f"{settled.before.status.name} cannot move to {target.name}"
            )
        else:
            found.applied = True
            found.detail = "already up to date"
        found.to_status = settled.after.status
        return found

    async def _reconcile_refund(
        self, refund: Refund, dry_run: bool, run_id: str
    ) -> Discrepancy | None:
        """A refund still waiting for Stripe's answer: ask Stripe (or, if the create call never
        came back, send it again with the same Idempotency-Key) and settle the answer."""
        async with self.db.acquire() as conn:
            payment = await payments.get(conn, refund.payment_id)
        assert payment is not None
        found = Discrepancy(
            payment_id=str(payment.id),
            provider_payment_id=payment.provider_payment_id or "",
            from_status=payment.status,
            to_status=payment.status,
            action=Action.STATUS_UPDATED,
        )
        if dry_run:
            found.detail = f"refund {refund.id} is {refund.status.name}; would ask the provider"
            return found
        cause = Cause(CauseKind.RECONCILIATION, run_id)
        try:
            if refund.provider_refund_id:
                result = await self.gateway.retrieve_refund(refund.provider_refund_id)
                updated = await self.settlement.settle_refund(payment.id, refund.id, result, cause)
            else:
                updated = await self.settlement.send_refund(payment, refund, cause)
        except Exception as exc:  # transport failures: report, try again next run
            found.action = Action.MANUAL_REVIEW
            found.detail = f"refund {refund.id}: provider call failed: {type(exc).__name__}"
            return found
        if updated.status is refund.status:
            return None
        async with self.db.acquire() as conn:
            after = await payments.get(conn, payment.id)
        assert after is not None
        found.to_status = after.status
        found.provider_status = updated.status.name.lower()
        found.applied = True
        found.detail = f"refund {refund.id}: {refund.status.name} -> {updated.status.name}"
        return found
