"""Payment RPC flows: fees, create, read, list, refund, cancel.

Creating a payment runs in recoverable phases, each one committed before the next starts:

1. a PENDING payment row under an id derived from (caller, idempotency key), so a retry after
   any failure finds the same row instead of making a second payment;
2. the Stripe PaymentIntent, created and confirmed in one call with an Idempotency-Key derived
   from that id (Stripe replays its first answer to a retried key);
3. the outcome applied through `core.Core.apply_intent` — the same code webhooks and
   reconciliation use — with the ledger posting and the outbox event in one transaction.

If phase 2 fails in transport, the RPC fails retryably (the kit releases the idempotency key),
the row stays PENDING, and either the client's retry, the webhook, or reconciliation finishes it.
Refunds follow the same shape; the refundable remainder is held under the payment's row lock
before Stripe is called, so concurrent refunds can never exceed what was paid.

Cancelling is decided by Stripe, never guessed locally (see `Payments.cancel`): a payment whose
PaymentIntent id is not recorded yet may be charged at Stripe right now, so it is not cancelled
but answered ABORTED (retry later). If Stripe nevertheless captures money for a payment closed
here, the late capture is charged and refunded in full automatically (`core.Core.apply_intent`,
then `Payments.refund_late_capture`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
from google.protobuf import timestamp_pb2
from prometheus_client import CollectorRegistry, Counter

from meshkit.callerlimits import CallerRateLimiter
from meshkit.context import Principal
from meshkit.db import Database
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
    invalid_argument,
)
from payment_service import access, convert, store
from payment_service.adapters.stripe_gateway import IntentResult, StripeGateway, StripeRejected
from payment_service.core import Applied, Cause, Core, late_capture_refund_id
from payment_service.domain import fees
from payment_service.domain.states import (
    CAPTURED_STATES,
    OPEN_STATES,
    CauseKind,
    PaymentStatus,
    RefundStatus,
)
from payment_service.settings import PaymentSettings
from payment_service.store import PaymentRecord, RefundRecord
from tickettoken.payment.v1 import payment_pb2

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

REASON_CREATE_IN_PROGRESS = "PAYMENT_CREATE_IN_PROGRESS"
# RetryInfo bounds for a cancel that must wait for the create: a create normally answers within
# a second; one whose outcome stayed unknown for long (a crash) waits for Stripe's webhook or
# reconciliation, so the hint grows with the payment's age up to the maximum.
CANCEL_RETRY_MIN_S = 1.0
CANCEL_RETRY_MAX_S = 30.0


class PaymentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.late_capture_refunds = Counter(
            "payment_late_capture_refunds_total",
            "Automatic full refunds of money Stripe captured for a payment closed here "
            "(CANCELLED or FAILED).",
            registry=registry,
        )


class Payments:
    """Payment flows; build once at start with the shared resources."""

    def __init__(
        self,
        *,
        db: Database,
        gateway: StripeGateway,
        core: Core,
        settings: PaymentSettings,
        refund_limiter: CallerRateLimiter,
        registry: CollectorRegistry,
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.core = core
        self.settings = settings
        self.refund_limiter = refund_limiter
        self.metrics = PaymentMetrics(registry)

    # -- fees ---------------------------------------------------------------------------------

    async def calculate_fees(
        self, request: payment_pb2.CalculateFeesRequest
    ) -> payment_pb2.CalculateFeesResponse:
        p = access.principal()
        violations: list[FieldViolation] = []
        convert.check_id(request.venue_id, "venue_id", violations)
        convert.check_currency(
            request.currency, "currency", self.settings.supported_currencies, violations
        )
        cart = convert.validate_cart(
            request.line_items, request.currency, max_tickets=None, violations=violations
        )
        overriding = request.HasField("jurisdiction_override") or request.venue_tier_override
        if overriding and not access.is_privileged(p):
            raise PermissionDenied(
                "only admins and services may override the jurisdiction or tier",
                reason="OVERRIDE_NOT_ALLOWED",
            )
        if request.venue_tier_override and request.venue_tier_override not in (
            t.value for t in fees.VenueTier
        ):
            violations.append(FieldViolation("venue_tier_override", "unknown tier"))
        convert.raise_if(violations)
        async with self.db.acquire() as conn:
            if request.HasField("jurisdiction_override"):
                jurisdiction = convert.jurisdiction_from_proto(request.jurisdiction_override)
            else:
                jurisdiction = await self._venue(conn, request.venue_id)
            if request.venue_tier_override:
                tier = fees.VenueTier(request.venue_tier_override)
            else:
                tier = fees.tier_for_volume(await store.venue_volume(conn, request.venue_id))
        quote = self._quote(request.currency, cart, tier, jurisdiction)
        return payment_pb2.CalculateFeesResponse(fees=convert.fees_to_proto(quote))

    def _quote(
        self, currency: str, cart: convert.Cart, tier: fees.VenueTier, j: fees.Jurisdiction
    ) -> fees.FeeQuote:
        return fees.quote(
            currency=currency,
            subtotal=cart.subtotal,
            ticket_count=cart.ticket_count,
            tier=tier,
            jurisdiction=j,
            gas_fee_per_ticket=self.settings.gas_fee_per_ticket_minor,
            entertainment_tax_bps=self.settings.entertainment_tax_bps,
        )

    @staticmethod
    async def _venue(conn: asyncpg.Connection, venue_id: str) -> fees.Jurisdiction:
        jurisdiction = await store.get_venue(conn, venue_id)
        if jurisdiction is None:
            raise FailedPrecondition(
                f"venue {venue_id} has no tax jurisdiction configured",
                reason="VENUE_NOT_CONFIGURED",
                metadata={"venue_id": venue_id},
            )
        return jurisdiction

    # -- create -------------------------------------------------------------------------------

    def _validate_create(self, request: payment_pb2.CreatePaymentRequest) -> convert.Cart:
        violations: list[FieldViolation] = []
        for name in ("order_id", "venue_id", "event_id", "buyer_id"):
            convert.check_id(getattr(request, name), name, violations)
        convert.check_currency(
            request.currency, "currency", self.settings.supported_currencies, violations
        )
        if not request.payment_method_id:
            violations.append(FieldViolation("payment_method_id", "required"))
        elif len(request.payment_method_id) > 255 or not request.payment_method_id.isprintable():
            violations.append(FieldViolation("payment_method_id", "not a payment method id"))
        cart = convert.validate_cart(
            request.line_items,
            request.currency,
            max_tickets=self.settings.max_tickets_per_order,
            violations=violations,
        )
        convert.check_metadata(dict(request.metadata), violations)
        if request.HasField("expected_total") and (
            request.expected_total.currency != request.currency
            or request.expected_total.amount_minor <= 0
        ):
            violations.append(
                FieldViolation("expected_total", "a positive amount in the payment currency")
            )
        if cart.subtotal <= 0 and not violations:
            violations.append(FieldViolation("line_items", "the subtotal must be positive"))
        convert.raise_if(violations)
        return cart

    async def create(
        self, request: payment_pb2.CreatePaymentRequest
    ) -> payment_pb2.CreatePaymentResponse:
        p = access.principal()
        cart = self._validate_create(request)
        if not access.is_admin(p) and p.subject != request.buyer_id:
            raise PermissionDenied("buyers pay only for themselves", reason="BUYER_MISMATCH")
        payment_id = convert.derive_id("payment", p.subject, request.idempotency_key)
        async with self.db.transaction() as conn:
            jurisdiction = await self._venue(conn, request.venue_id)
            tier = fees.tier_for_volume(await store.venue_volume(conn, request.venue_id))
            quote = self._quote(request.currency, cart, tier, jurisdiction)
            if quote.total > self.settings.max_payment_minor:
                raise invalid_argument(
                    [
                        FieldViolation(
                            "line_items",
                            f"total {quote.total} exceeds the maximum payment "
                            f"{self.settings.max_payment_minor}",
                        )
                    ]
                )
            if (
                request.HasField("expected_total")
                and request.expected_total.amount_minor != quote.total
            ):
                raise FailedPrecondition(
                    "the total changed since it was shown",
                    reason="TOTAL_MISMATCH",
                    metadata={
                        "expected": str(request.expected_total.amount_minor),
                        "total": str(quote.total),
                    },
                )
            items = convert.assign_ticket_ids(payment_id, request.line_items)
            try:
                inserted = await store.insert_payment(
                    conn,
                    {
                        "id": payment_id,
                        "order_id": request.order_id,
                        "venue_id": request.venue_id,
                        "event_id": request.event_id,
                        "buyer_id": request.buyer_id,
                        "currency": request.currency,
                        "status": PaymentStatus.PENDING.name,
                        "subtotal": quote.subtotal,
                        "platform_fee": quote.platform_fee,
                        "gas_fee": quote.gas_fee,
                        "tax_total": quote.tax.total_tax,
                        "total": quote.total,
                        "payment_method_id": request.payment_method_id,
                        "details": convert.payment_details(
                            line_items=items, fees=convert.fees_to_proto(quote), request=request
                        ),
                        "created_by": p.subject,
                    },
                )
            except store.OrderHasLivePayment:
                raise FailedPrecondition(
                    f"order {request.order_id} already has a payment in progress or paid",
                    reason="ORDER_HAS_LIVE_PAYMENT",
                    metadata={"order_id": request.order_id},
                ) from None
            if inserted:
                await store.record_creation(conn, payment_id, "CreatePayment")
            payment = await store.get_payment(conn, payment_id)
        assert payment is not None
        if payment.state is PaymentStatus.PENDING and not payment.provider_payment_id:
            payment = await self._confirm(payment, request.return_url)
        refunds: Sequence[RefundRecord] = ()
        if payment.late_capture_at is not None:
            # Only a late capture gets a refund during a create: show it with the payment.
            payment, refunds = await self.load(payment.id)
        return payment_pb2.CreatePaymentResponse(payment=convert.payment_to_proto(payment, refunds))

    async def _confirm(self, payment: PaymentRecord, return_url: str) -> PaymentRecord:
        try:
            result = await self.gateway.create_intent(
                idempotency_key=f"tt-payment-{payment.id}",
                amount=payment.total,
                currency=payment.currency,
                payment_method=payment.payment_method_id,
                metadata={
                    "payment_id": str(payment.id),
                    "order_id": payment.order_id,
                    "venue_id": payment.venue_id,
                    "event_id": payment.event_id,
                    "buyer_id": payment.buyer_id,
                },
                return_url=return_url,
            )
        except StripeRejected as exc:
            # Stripe will never accept this request as sent (e.g. an unknown payment method):
            # a failed payment, recorded like a decline.
            result = IntentResult(
                intent_id="",
                status="requires_payment_method",
                failure_code=exc.code,
                failure_message=exc.message,
                declined=True,
            )
        cause = Cause(CauseKind.RPC, "CreatePayment")
        async with self.db.transaction() as conn:
            locked = await store.get_payment(conn, payment.id, for_update=True)
            assert locked is not None
            closed_as = locked.state
            moved, applied = await self.core.apply_intent(conn, locked, result, cause)
        if applied is Applied.LATE_CAPTURE:
            # Stripe charged after the payment was closed here (e.g. reconciliation gave up on
            # this slow create): the money goes straight back.
            moved = await self.refund_late_capture(moved.id, closed_as, cause)
        return moved

    # -- read ---------------------------------------------------------------------------------

    async def get(self, request: payment_pb2.GetPaymentRequest) -> payment_pb2.GetPaymentResponse:
        p = access.principal()
        payment_id = convert.parse_uuid(request.payment_id, "payment_id")
        async with self.db.acquire() as conn:
            payment = await store.get_payment(conn, payment_id)
            if payment is None or not access.can_read_payment(
                p, payment.buyer_id, payment.venue_id
            ):
                # Someone else's payment is "not found": its existence is not disclosed.
                raise NotFound(
                    f"payment {request.payment_id} not found", reason="PAYMENT_NOT_FOUND"
                )
            refunds = (await store.refunds_of(conn, [payment.id]))[payment.id]
        return payment_pb2.GetPaymentResponse(payment=convert.payment_to_proto(payment, refunds))

    async def list_payments(
        self, request: payment_pb2.ListPaymentsRequest
    ) -> payment_pb2.ListPaymentsResponse:
        p = access.principal()
        violations: list[FieldViolation] = []
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        statuses: list[str] = []
        for i, value in enumerate(request.statuses):
            try:
                statuses.append(PaymentStatus(value).name)
            except ValueError:
                violations.append(FieldViolation(f"statuses[{i}]", "unknown status"))
        convert.raise_if(violations)
        after = convert.decode_page_token(request.page_token) if request.page_token else None
        flt = self._scope(
            p,
            store.PaymentFilter(
                buyer_id=request.buyer_id,
                venue_ids=[request.venue_id] if request.venue_id else [],
                event_id=request.event_id,
                order_id=request.order_id,
                statuses=statuses,
                created_from=(
                    _dt(request.created.start) if request.created.HasField("start") else None
                ),
                created_to=_dt(request.created.end) if request.created.HasField("end") else None,
            ),
        )
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        async with self.db.acquire() as conn:
            rows = await store.list_payments(conn, flt, limit=size + 1, after=after)
            page = rows[:size]
            refunds = await store.refunds_of(conn, [r.id for r in page])
        token = ""
        if len(rows) > size:
            token = convert.encode_page_token(page[-1].created_at, page[-1].id)
        return payment_pb2.ListPaymentsResponse(
            payments=[convert.payment_to_proto(r, refunds[r.id]) for r in page],
            next_page_token=token,
        )

    @staticmethod
    def _scope(p: Principal, flt: store.PaymentFilter) -> store.PaymentFilter:
        """Narrow a filter to what the caller may see, or refuse a filter outside it."""
        if access.is_privileged(p):
            return flt
        managed = access.venue_ids(p) if p.has_role("venue_admin") else frozenset()
        requested = set(flt.venue_ids)
        if managed and ((requested and requested <= managed) or not p.has_role("buyer")):
            if requested - managed:
                raise PermissionDenied(
                    "the caller does not manage these venues", reason="PAYMENTS_NOT_VISIBLE"
                )
            return dataclasses.replace(flt, venue_ids=sorted(requested or managed))
        if p.has_role("buyer"):
            if flt.buyer_id and flt.buyer_id != p.subject:
                raise PermissionDenied(
                    "buyers list only their own payments", reason="PAYMENTS_NOT_VISIBLE"
                )
            return dataclasses.replace(flt, buyer_id=p.subject)
        raise PermissionDenied(
            "these payments are not visible to the caller", reason="PAYMENTS_NOT_VISIBLE"
        )

    async def load(self, payment_id: uuid.UUID) -> tuple[PaymentRecord, list[RefundRecord]]:
        async with self.db.acquire() as conn:
            payment = await store.get_payment(conn, payment_id)
            assert payment is not None
            refunds = (await store.refunds_of(conn, [payment_id]))[payment_id]
        return payment, refunds

    # -- refund -------------------------------------------------------------------------------

    async def refund(
        self, request: payment_pb2.RefundPaymentRequest
    ) -> payment_pb2.RefundPaymentResponse:
        p = access.principal()
        payment_id = convert.parse_uuid(request.payment_id, "payment_id")
        violations: list[FieldViolation] = []
        if request.HasField("amount") and request.amount.amount_minor <= 0:
            violations.append(FieldViolation("amount.amount_minor", "must be positive"))
        if request.reason not in payment_pb2.RefundReason.values():
            violations.append(FieldViolation("reason", "unknown reason"))
        if len(request.note) > 500:
            violations.append(FieldViolation("note", "at most 500 characters"))
        convert.raise_if(violations)
        payment, _ = await self._visible(payment_id, p, write="refund")
        if request.HasField("amount") and request.amount.currency != payment.currency:
            raise invalid_argument(
                [FieldViolation("amount.currency", f"must be the payment's {payment.currency}")]
            )
        tickets = convert.ticket_ids_of(payment)
        unknown = [t for t in request.ticket_ids if t not in tickets]
        if unknown:
            raise invalid_argument(
                [FieldViolation("ticket_ids", f"not tickets of this payment: {unknown[:5]}")]
            )
        refund_id = convert.derive_id("refund", p.subject, request.idempotency_key)
        await self.refund_limiter.check(p.subject)
        async with self.db.transaction() as conn:
            refund = await store.get_refund(conn, refund_id)
            locked = await store.get_payment(conn, payment_id, for_update=True)
            assert locked is not None
            if refund is None:
                if locked.state not in CAPTURED_STATES:
                    raise FailedPrecondition(
                        f"a {locked.status} payment cannot be refunded",
                        reason="PAYMENT_NOT_REFUNDABLE",
                        metadata={"status": locked.status},
                    )
                amount = (
                    request.amount.amount_minor if request.HasField("amount") else locked.refundable
                )
                if amount <= 0:
                    raise FailedPrecondition(
                        "nothing is left to refund", reason="NOTHING_TO_REFUND"
                    )
                if amount > locked.refundable:
                    raise FailedPrecondition(
                        f"refund of {amount} exceeds the refundable {locked.refundable}",
                        reason="REFUND_EXCEEDS_REFUNDABLE",
                        metadata={"refundable": str(locked.refundable)},
                    )
                ticket_ids = list(request.ticket_ids)
                if not ticket_ids and amount == locked.refundable and locked.refund_held == 0:
                    ticket_ids = tickets
                locked, refund = await self.core.new_refund(
                    conn,
                    locked,
                    refund_id=refund_id,
                    amount=amount,
                    reason=int(request.reason),
                    note=request.note,
                    ticket_ids=ticket_ids,
                    created_by=p.subject,
                )
        if refund.state.name == "PENDING" and not refund.provider_refund_id:
            refund = await self.send_refund(locked, refund, Cause(CauseKind.RPC, "RefundPayment"))
        payment, refunds = await self.load(payment_id)
        return payment_pb2.RefundPaymentResponse(
            refund=convert.refund_to_proto(refund),
            payment=convert.payment_to_proto(payment, refunds),
        )

    async def send_refund(
        self, payment: PaymentRecord, refund: RefundRecord, cause: Cause
    ) -> RefundRecord:
        """Create the refund at Stripe (same key on every try) and apply Stripe's answer."""
        assert payment.provider_payment_id is not None
        try:
            result = await self.gateway.create_refund(
                idempotency_key=refund_idempotency_key(payment.id, refund.id),
                intent_id=payment.provider_payment_id,
                amount=refund.amount,
                metadata={
                    "refund_id": str(refund.id),
                    "payment_id": str(payment.id),
                    "reason": payment_pb2.RefundReason.Name(refund.reason),  # type: ignore[arg-type]
                },
            )
            status, provider_id, failure = result.status, result.refund_id, result.failure_reason
        except StripeRejected as exc:
            status, provider_id, failure = "failed", "", exc.code
        return await self.apply_refund_result(
            payment.id, refund.id, status, provider_id, failure, cause
        )

    async def apply_refund_result(
        self,
        payment_id: uuid.UUID,
        refund_id: uuid.UUID,
        status: str,
        provider_refund_id: str,
        failure_reason: str,
        cause: Cause,
    ) -> RefundRecord:
        async with self.db.transaction() as conn:
            locked = await store.get_payment(conn, payment_id, for_update=True)
            current = await store.get_refund(conn, refund_id, for_update=True)
            assert locked is not None and current is not None
            _, refund, _ = await self.core.apply_refund(
                conn,
                locked,
                current,
                provider_status=status,
                provider_refund_id=provider_refund_id,
                failure_reason=failure_reason,
                cause=cause,
            )
        return refund

    # -- cancel -------------------------------------------------------------------------------

    async def cancel(
        self, request: payment_pb2.CancelPaymentRequest
    ) -> payment_pb2.CancelPaymentResponse:
        """Cancel an uncaptured payment — at Stripe first, and only ever to Stripe's real state.

        A payment is cancelled only through its PaymentIntent: Stripe cancels it (or refuses
        because it moved on, e.g. it just succeeded, and we apply what it really is). An open
        payment with no PaymentIntent id recorded is in doubt: its create call may be waiting on
        Stripe right now, or it crashed / lost its connection after Stripe created and charged
        the intent but before we recorded the id. Nothing here can tell those apart from "Stripe
        never saw it", so it is NOT cancelled locally: the answer is ABORTED
        `PAYMENT_CREATE_IN_PROGRESS` with RetryInfo, and nothing changes. (Cancelling it locally
        is exactly how money got captured for a CANCELLED payment.)

        The doubt ends from Stripe's side: the create call records Stripe's answer; after a
        crash, Stripe's webhook (every PaymentIntent we create carries our payment id in its
        metadata) or the client's retry of CreatePayment (same Stripe Idempotency-Key, so Stripe
        replays its first answer) records the intent. Then a retried cancel either cancels the
        intent at Stripe or finds it captured (INVALID_TRANSITION: refund it instead). If Stripe
        never got the request, nothing will ever name an intent: reconciliation gives the
        payment up as FAILED after its threshold (`reconcile_older_than_s`).

        Not chosen: looking the intent up at Stripe. Search by metadata is eventually
        consistent (a miss proves nothing), listing cannot filter by metadata, and replaying the
        create with its idempotency key would create and confirm the charge if Stripe never saw
        it, the opposite of a cancel. Should a capture still reach a payment closed here (a
        slow create after reconciliation gave up, rows cancelled before this rule), the
        late-capture path charges and refunds it automatically (`refund_late_capture`).
        """
        p = access.principal()
        payment_id = convert.parse_uuid(request.payment_id, "payment_id")
        if request.reason not in payment_pb2.CancellationReason.values():
            raise invalid_argument([FieldViolation("reason", "unknown reason")])
        payment, _ = await self._visible(payment_id, p, write="cancel")
        if payment.state is PaymentStatus.CANCELLED:
            return payment_pb2.CancelPaymentResponse(payment=convert.payment_to_proto(payment))
        if payment.state not in OPEN_STATES:
            raise _not_cancellable(payment)
        if not payment.provider_payment_id:
            raise _create_in_progress(payment)
        try:
            result = await self.gateway.cancel_intent(
                idempotency_key=f"tt-cancel-{payment.id}",
                intent_id=payment.provider_payment_id,
            )
        except StripeRejected:
            # Stripe refuses to cancel an intent that moved on (e.g. it just succeeded):
            # learn its real state and apply that instead.
            result = await self.gateway.retrieve_intent(payment.provider_payment_id)
        # Stripe's cancellation_reason has other values (and localstripe refuses it): the
        # reason is kept with the transition instead.
        reason = payment_pb2.CancellationReason.Name(request.reason)
        cause = Cause(CauseKind.RPC, f"CancelPayment:{reason}")
        async with self.db.transaction() as conn:
            locked = await store.get_payment(conn, payment_id, for_update=True)
            assert locked is not None
            closed_as = locked.state
            locked, applied = await self.core.apply_intent(conn, locked, result, cause)
        if applied is Applied.LATE_CAPTURE:
            # Closed by someone else meanwhile, and Stripe says it captured: refund it.
            locked = await self.refund_late_capture(locked.id, closed_as, cause)
        if locked.state is not PaymentStatus.CANCELLED:
            raise _not_cancellable(locked)
        payment, refunds = await self.load(payment_id)
        return payment_pb2.CancelPaymentResponse(payment=convert.payment_to_proto(payment, refunds))

    # -- late capture -------------------------------------------------------------------------

    async def refund_late_capture(
        self, payment_id: uuid.UUID, closed_as: PaymentStatus, cause: Cause
    ) -> PaymentRecord:
        """Send the automatic refund of a late capture; call once, after the transaction in
        which `core.Core.apply_intent` answered `Applied.LATE_CAPTURE` has committed.

        Raises an alert (an ERROR log line and `payment_late_capture_refunds_total`), then
        sends the held refund under the Idempotency-Key `tt-autorefund-<payment id>`. A
        transport failure is logged and left to reconciliation, which sends the PENDING refund
        again with the same key; the caller's own outcome (a processed webhook, a create's
        answer) is not failed for it. Returns the payment as it stands afterwards.
        """
        payment, refunds = await self.load(payment_id)
        refund_id = late_capture_refund_id(payment_id)
        refund = next((r for r in refunds if r.id == refund_id), None)
        self.metrics.late_capture_refunds.inc()
        logger.error(
            "Stripe captured a payment that was closed here; refunding it automatically",
            extra={
                "payment_id": str(payment_id),
                "provider_payment_id": payment.provider_payment_id,
                "closed_as": closed_as.name,
                "amount": payment.total,
                "currency": payment.currency,
                "refund_id": str(refund_id),
                "cause": f"{cause.kind.value}:{cause.ref}",
            },
        )
        if refund is None or refund.state is not RefundStatus.PENDING or refund.provider_refund_id:
            return payment  # already sent (or settled) by someone else
        try:
            refund = await self.send_refund(payment, refund, cause)
        except Exception:
            logger.warning(
                "automatic refund not sent yet; reconciliation will send it",
                extra={"payment_id": str(payment_id), "refund_id": str(refund_id)},
                exc_info=True,
            )
            return (await self.load(payment_id))[0]
        if refund.state in (RefundStatus.FAILED, RefundStatus.CANCELLED):
            logger.error(
                "Stripe refused the automatic refund of a late capture; refund it by hand",
                extra={
                    "payment_id": str(payment_id),
                    "refund_id": str(refund_id),
                    "failure_reason": refund.failure_reason,
                },
            )
        return (await self.load(payment_id))[0]

    async def _visible(
        self, payment_id: uuid.UUID, p: Principal, *, write: str
    ) -> tuple[PaymentRecord, Sequence[RefundRecord]]:
        async with self.db.acquire() as conn:
            payment = await store.get_payment(conn, payment_id)
        if payment is None or not access.can_read_payment(p, payment.buyer_id, payment.venue_id):
            raise NotFound(f"payment {payment_id} not found", reason="PAYMENT_NOT_FOUND")
        allowed = (
            access.can_refund_payment(p, payment.buyer_id, payment.venue_id)
            if write == "refund"
            else access.can_cancel_payment(p, payment.buyer_id)
        )
        if not allowed:
            raise PermissionDenied(
                f"the caller may not {write} this payment", reason="PAYMENT_NOT_OWNED"
            )
        return payment, ()


def refund_idempotency_key(payment_id: uuid.UUID, refund_id: uuid.UUID) -> str:
    """Stripe's Idempotency-Key for a refund: derived from our ids, the same on every try
    (the automatic late-capture refund from the payment id, one per payment)."""
    if refund_id == late_capture_refund_id(payment_id):
        return f"tt-autorefund-{payment_id}"
    return f"tt-refund-{refund_id}"


def _create_in_progress(payment: PaymentRecord) -> Aborted:
    pending_s = max(0.0, (datetime.now(UTC) - payment.updated_at).total_seconds())
    return Aborted(
        "the payment is still being created at the payment provider (or its outcome is not "
        "known yet); retry the cancellation later",
        reason=REASON_CREATE_IN_PROGRESS,
        metadata={"payment_id": str(payment.id), "status": payment.status},
        retry_after=min(CANCEL_RETRY_MAX_S, max(CANCEL_RETRY_MIN_S, pending_s)),
    )


def _not_cancellable(payment: PaymentRecord) -> FailedPrecondition:
    return FailedPrecondition(
        f"a {payment.status} payment cannot be cancelled",
        reason="INVALID_TRANSITION",
        metadata={"status": payment.status, "to_status": "CANCELLED"},
    )


def _dt(stamp: timestamp_pb2.Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


__all__ = ["Applied", "Payments"]
