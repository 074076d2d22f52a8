"""PaymentService servicer: proto in, use case, proto out — nothing else.

Requests reach these methods already authenticated, authorised by the policy table and checked
against the contract's rules (the kit's call layer); row-level rules come from `access`, and the
use cases' domain errors become gRPC errors through `errors` (the service's error map). Mutating
RPCs are `@idempotent`: the kit stores the first response (or final error) per (caller, RPC,
idempotency key) and replays it byte for byte; the use cases derive their object ids and Stripe
keys from the same key, so even a retry after a crash resumes the same payment.
"""

from __future__ import annotations

import uuid

import grpc

from meshkit.idempotency import idempotent
from meshkit.paging import Page
from payment_service.api import access, convert
from payment_service.usecases.cancel import Cancellations
from payment_service.usecases.fees import Fees
from payment_service.usecases.payments import Payments
from payment_service.usecases.payouts import Payouts
from payment_service.usecases.reads import PaymentView
from payment_service.usecases.reconciliation import Reconciliation
from payment_service.usecases.refunds import Refunds
from payment_service.usecases.webhooks import Webhooks
from tickettoken.payment.v1 import payment_pb2 as pb
from tickettoken.payment.v1 import payment_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]


class PaymentServicer(payment_pb2_grpc.PaymentServiceServicer):
    """Thin adapter between the PaymentService contract and the use cases."""

    def __init__(
        self,
        *,
        fees: Fees,
        payments: Payments,
        refunds: Refunds,
        cancellations: Cancellations,
        webhooks: Webhooks,
        payouts: Payouts,
        reconciliation: Reconciliation,
    ) -> None:
        self.fees = fees
        self.payments = payments
        self.refunds = refunds
        self.cancellations = cancellations
        self.webhooks = webhooks
        self.payouts = payouts
        self.reconciliation = reconciliation

    async def CalculateFees(
        self, request: pb.CalculateFeesRequest, context: Context
    ) -> pb.CalculateFeesResponse:
        overriding = request.HasField("jurisdiction_override") or bool(request.venue_tier_override)
        if overriding:
            access.require_override(access.principal())
        quote = await self.fees.calculate(
            request.venue_id,
            request.currency,
            convert.line_items(request.line_items, request.currency),
            jurisdiction=(
                convert.jurisdiction(request.jurisdiction_override)
                if request.HasField("jurisdiction_override")
                else None
            ),
            tier=convert.tier(request.venue_tier_override),
        )
        return pb.CalculateFeesResponse(fees=convert.fees_proto(quote))

    @idempotent
    async def CreatePayment(
        self, request: pb.CreatePaymentRequest, context: Context
    ) -> pb.CreatePaymentResponse:
        order = convert.create_request(request)
        p = access.principal()
        access.require_buyer(p, order.buyer_id)
        view = await self.payments.create(order, actor=p.subject)
        return pb.CreatePaymentResponse(payment=convert.view_proto(view))

    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        view = await self.payments.get(
            uuid.UUID(request.payment_id), authorize=access.reader(access.principal())
        )
        return pb.GetPaymentResponse(payment=convert.view_proto(view))

    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: Context
    ) -> pb.ListPaymentsResponse:
        page: Page[PaymentView] = Page.of(request)
        views = await self.payments.find(
            access.scope(access.principal(), convert.payment_filter(request)),
            limit=page.size + 1,
            after=convert.page_after(page.after),
        )
        shown, token = page.cut(views, key=convert.cursor_of)
        return pb.ListPaymentsResponse(
            payments=[convert.view_proto(v) for v in shown], next_page_token=token
        )

    @idempotent
    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: Context
    ) -> pb.RefundPaymentResponse:
        p = access.principal()
        refund, view = await self.refunds.refund(
            convert.refund_request(request), actor=p.subject, authorize=access.refunder(p)
        )
        return pb.RefundPaymentResponse(
            refund=convert.refund_proto(refund), payment=convert.view_proto(view)
        )

    @idempotent
    async def CancelPayment(
        self, request: pb.CancelPaymentRequest, context: Context
    ) -> pb.CancelPaymentResponse:
        view = await self.cancellations.cancel(
            uuid.UUID(request.payment_id),
            convert.cancellation_reason(request),
            authorize=access.canceller(access.principal()),
        )
        return pb.CancelPaymentResponse(payment=convert.view_proto(view))

    async def HandleProviderWebhook(
        self, request: pb.HandleProviderWebhookRequest, context: Context
    ) -> pb.HandleProviderWebhookResponse:
        # Deduplicated by the provider's event id in the inbox, not by an idempotency key.
        handled = await self.webhooks.handle(convert.delivery(request.webhook))
        return convert.webhook_response(handled)

    async def GetVenueBalance(
        self, request: pb.GetVenueBalanceRequest, context: Context
    ) -> pb.GetVenueBalanceResponse:
        access.require_venue(access.principal(), request.venue_id)
        balance = await self.payouts.balance(request.venue_id, request.currency)
        return pb.GetVenueBalanceResponse(balance=convert.balance_proto(balance))

    @idempotent
    async def RequestPayout(
        self, request: pb.RequestPayoutRequest, context: Context
    ) -> pb.RequestPayoutResponse:
        p = access.principal()
        access.require_venue(p, request.venue_id)
        payout, balance = await self.payouts.request_payout(
            convert.payout_request(request), actor=p.subject
        )
        return pb.RequestPayoutResponse(
            payout=convert.payout_proto(payout), balance=convert.balance_proto(balance)
        )

    @idempotent
    async def ReconcilePayments(
        self, request: pb.ReconcilePaymentsRequest, context: Context
    ) -> pb.ReconcilePaymentsResponse:
        report = await self.reconciliation.run(
            dry_run=request.dry_run,
            payment_ids=convert.uuids(request.payment_ids),
            older_than_s=float(request.older_than_seconds) or None,
            limit=request.limit or None,
        )
        return convert.report_proto(report)
