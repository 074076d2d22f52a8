"""The payment service's typed errors: what can stop a request, in the domain's own terms.

Use cases and access rules raise these; `api.errors` (the service's error map, handed to the kit
as `ServiceRegistration.errors`) is the one place that turns them into gRPC statuses and reasons.
What an error carries is plain values: `message`; `facts`, the safe-to-show values that explain
it (ids, states, amounts; they become the ErrorInfo metadata); `violations` for bad input; and
`retry_after` (seconds) when trying again later can help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Violation:
    """One bad field of a request: its path (`line_items[0].quantity`) and what is wrong."""

    field: str
    description: str


class PaymentError(Exception):
    """Base of every error this service means to show its caller."""

    def __init__(self, message: str, facts: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.facts: dict[str, str] = dict(facts or {})


# -- bad input that only this service can judge (settings or state) ---------------------------


class InvalidInput(PaymentError):
    """The request cannot be valid here, whatever the state (e.g. a currency this deployment
    does not sell in); nothing was changed."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        text = "; ".join(f"{v.field}: {v.description}" for v in violations[:10])
        super().__init__(f"invalid request: {text}")
        self.violations = tuple(violations)


class WebhookUnverified(InvalidInput):
    """A webhook failed signature or timestamp verification (or is not a provider event)."""

    def __init__(self, message: str, violation: Violation) -> None:
        super().__init__([violation])
        self.message = message


# -- not found / not allowed ------------------------------------------------------------------


class NotFound(PaymentError):
    """The object does not exist, or the caller may not know that it does."""


class PaymentNotFound(NotFound):
    pass


class VenueNotFound(NotFound):
    pass


class NotPermitted(PaymentError):
    """The caller may see the object (or call the RPC) but not do this with it."""


class PaymentNotOwned(NotPermitted):
    pass


class BuyerMismatch(NotPermitted):
    pass


class OverrideNotAllowed(NotPermitted):
    pass


class VenueNotManaged(NotPermitted):
    pass


class PaymentsNotVisible(NotPermitted):
    pass


# -- the state does not allow it ----------------------------------------------------------------


class Conflict(PaymentError):
    """The request is valid but the current state does not allow it (retrying will not help
    until something else changes)."""


class VenueNotConfigured(Conflict):
    pass


class TotalMismatch(Conflict):
    pass


class OrderHasLivePayment(Conflict):
    pass


class PaymentNotRefundable(Conflict):
    pass


class NothingToRefund(Conflict):
    pass


class RefundExceedsRefundable(Conflict):
    pass


class InvalidTransition(Conflict):
    pass


class InsufficientPayable(Conflict):
    pass


class DailyPayoutLimit(Conflict):
    pass


# -- try again later ----------------------------------------------------------------------------


class Busy(PaymentError):
    """Another operation on the same object has not finished; retry after `retry_after_s`."""

    def __init__(
        self, message: str, facts: Mapping[str, str] | None = None, *, retry_after: float
    ) -> None:
        super().__init__(message, facts)
        self.retry_after = retry_after


class CreateInProgress(Busy):
    pass


class WebhookNotProcessed(PaymentError):
    """Processing a verified webhook failed and changed nothing; the provider delivers it again
    (a gRPC caller may retry after `retry_after` seconds)."""

    retry_after = 1.0
