"""The error map (`ServiceRegistration.errors`): the one place where the payment service's
domain errors become gRPC statuses and reasons (the kit's `ErrorTable` reads the message, facts,
field violations and retry hint the errors carry).

Every concrete `PaymentError` has its own entry (a unit test holds that) and each category its
fallback; an exception that is not a `PaymentError` is not ours to map (None: the kit answers
INTERNAL and logs it).
"""

from __future__ import annotations

from meshkit.errormap import Entry, ErrorTable
from meshkit.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from payment_service.domain import errors as e

MAP: dict[type[Exception], Entry] = {
    e.InvalidInput: (InvalidArgument, "INVALID_REQUEST"),
    e.WebhookUnverified: (InvalidArgument, "WEBHOOK_SIGNATURE_INVALID"),
    e.PaymentNotFound: (NotFound, "PAYMENT_NOT_FOUND"),
    e.VenueNotFound: (NotFound, "VENUE_NOT_FOUND"),
    e.PaymentNotOwned: (PermissionDenied, "PAYMENT_NOT_OWNED"),
    e.BuyerMismatch: (PermissionDenied, "BUYER_MISMATCH"),
    e.OverrideNotAllowed: (PermissionDenied, "OVERRIDE_NOT_ALLOWED"),
    e.VenueNotManaged: (PermissionDenied, "VENUE_NOT_MANAGED"),
    e.PaymentsNotVisible: (PermissionDenied, "PAYMENTS_NOT_VISIBLE"),
    e.VenueNotConfigured: (FailedPrecondition, "VENUE_NOT_CONFIGURED"),
    e.TotalMismatch: (FailedPrecondition, "TOTAL_MISMATCH"),
    e.OrderHasLivePayment: (FailedPrecondition, "ORDER_HAS_LIVE_PAYMENT"),
    e.PaymentNotRefundable: (FailedPrecondition, "PAYMENT_NOT_REFUNDABLE"),
    e.NothingToRefund: (FailedPrecondition, "NOTHING_TO_REFUND"),
    e.RefundExceedsRefundable: (FailedPrecondition, "REFUND_EXCEEDS_REFUNDABLE"),
    e.InvalidTransition: (FailedPrecondition, "INVALID_TRANSITION"),
    e.InsufficientPayable: (FailedPrecondition, "INSUFFICIENT_PAYABLE"),
    e.DailyPayoutLimit: (FailedPrecondition, "DAILY_PAYOUT_LIMIT"),
    e.CreateInProgress: (Aborted, "PAYMENT_CREATE_IN_PROGRESS"),
    e.WebhookNotProcessed: (Unavailable, "WEBHOOK_PROCESSING_FAILED"),
    # The categories, for an error added without an entry of its own.
    e.NotFound: (NotFound, "NOT_FOUND"),
    e.NotPermitted: (PermissionDenied, "PERMISSION_DENIED"),
    e.Conflict: (FailedPrecondition, "FAILED_PRECONDITION"),
    e.Busy: (Aborted, "ABORTED"),
}

to_mesh_error = ErrorTable(MAP, base=e.PaymentError)
