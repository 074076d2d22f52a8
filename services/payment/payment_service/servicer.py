"""PaymentService servicer: proto in, flow call, proto out — nothing else.

Mutating RPCs are `@idempotent`: the kit stores the first response (or final error) per
(caller, RPC, idempotency key) and replays it byte for byte;
the flows behind it derive their object ids and Stripe keys from the same key, so even a retry
after a crash resumes the same payment instead of charging twice.
"""

from __future__ import annotations

from typing import Any

from meshkit.errors import FieldViolation, invalid_argument
from meshkit.idempotency import idempotent
from meshkit.server import Kit
from payment_service import convert
from payment_service.payments import Payments
from payment_service.payouts import Payouts
from payment_service.reconciliation import Reconciler
from payment_service.settings import PaymentSettings
from payment_service.webhooks import Webhooks
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Thin adapter between the PaymentService contract and the flows."""

    def __init__(
        self,
        kit: Kit,
        *,
        payments: Payments,
        payouts: Payouts,
        webhooks: Webhooks,
        reconciler: Reconciler,
        settings: PaymentSettings,
    ) -> None:
        self.kit = kit
        self.payments = payments
        self.payouts = payouts
        self.webhooks = webhooks
        self.reconciler = reconciler
        self.settings = settings

    async def CalculateFees(
        self, request: payment_pb2.CalculateFeesRequest, context: Any
    ) -> payment_pb2.CalculateFeesResponse:
        return await self.payments.calculate_fees(request)

    @idempotent
    async def CreatePayment(
        self, request: payment_pb2.CreatePaymentRequest, context: Any
    ) -> payment_pb2.CreatePaymentResponse:
        return await self.payments.create(request)

    async def GetPayment(
        self, request: payment_pb2.GetPaymentRequest, context: Any
    ) -> payment_pb2.GetPaymentResponse:
        return await self.payments.get(request)

    async def ListPayments(
        self, request: payment_pb2.ListPaymentsRequest, context: Any
    ) -> payment_pb2.ListPaymentsResponse:
        return await self.payments.list_payments(request)

    @idempotent
    async def RefundPayment(
        self, request: payment_pb2.RefundPaymentRequest, context: Any
    ) -> payment_pb2.RefundPaymentResponse:
        return await self.payments.refund(request)

    @idempotent
    async def CancelPayment(
        self, request: payment_pb2.CancelPaymentRequest, context: Any
    ) -> payment_pb2.CancelPaymentResponse:
        return await self.payments.cancel(request)

    async def HandleProviderWebhook(
        self, request: payment_pb2.HandleProviderWebhookRequest, context: Any
    ) -> payment_pb2.HandleProviderWebhookResponse:
        # Deduplicated by the provider's event id in the inbox, not by an idempotency key.
        return await self.webhooks.handle(request.webhook)

    async def GetVenueBalance(
        self, request: payment_pb2.GetVenueBalanceRequest, context: Any
    ) -> payment_pb2.GetVenueBalanceResponse:
        return await self.payouts.get_balance(request)

    @idempotent
    async def RequestPayout(
        self, request: payment_pb2.RequestPayoutRequest, context: Any
    ) -> payment_pb2.RequestPayoutResponse:
        return await self.payouts.request_payout(request)

    @idempotent
    async def ReconcilePayments(
        self, request: payment_pb2.ReconcilePaymentsRequest, context: Any
    ) -> payment_pb2.ReconcilePaymentsResponse:
        violations = []
        if request.older_than_seconds < 0:
            violations.append(FieldViolation("older_than_seconds", "must not be negative"))
        if request.limit < 0:
            violations.append(FieldViolation("limit", "must not be negative"))
        ids = [
            convert.parse_uuid(pid, f"payment_ids[{i}]")
            for i, pid in enumerate(request.payment_ids)
        ]
        if violations:
            raise invalid_argument(violations)

        # Listed payments are checked whatever their age; otherwise the default threshold.
        default_age = 0.0 if ids else self.settings.reconcile_older_than_s
        older_than = float(request.older_than_seconds) or default_age

        return await self.reconciler.run(
            older_than_s=older_than,
            limit=request.limit or self.settings.reconcile_batch,
            dry_run=request.dry_run,
            payment_ids=ids,
            outbox_older_than_s=float(request.older_than_seconds) or None,
        )
