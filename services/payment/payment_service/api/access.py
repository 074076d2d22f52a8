"""Who may see or change which payment, venue balance or payout (beyond the RPC policy table).

The policy table (policy.py) says which roles may call an RPC at all; these rules say which
objects they may touch: a buyer their own payments (principal subject = buyer id), a venue admin
the venues listed in their token's `venue_ids` claim, an admin everything. Services named in the
policy act on behalf of the mesh and see everything they are allowed to call. A payment the
caller may not see is "not found": its existence is not disclosed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from meshkit.context import Principal, current_call
from meshkit.errors import PermissionDenied
from payment_service.domain.errors import (
    BuyerMismatch,
    OverrideNotAllowed,
    PaymentNotFound,
    PaymentNotOwned,
    PaymentsNotVisible,
    VenueNotManaged,
)
from payment_service.domain.model import Payment, PaymentFilter

Authorize = Callable[[Payment], None]


def principal() -> Principal:
    call = current_call()
    if call is None:  # pragma: no cover - every RPC runs inside the kit's call context
        raise PermissionDenied("no caller")
    return call.principal


def is_admin(p: Principal) -> bool:
    return p.has_role("admin")


def is_privileged(p: Principal) -> bool:
    """Admins and mesh services (e.g. for fee overrides)."""
    return is_admin(p) or p.is_service


def manages_venue(p: Principal, venue_id: str) -> bool:
    return is_admin(p) or (p.has_role("venue_admin") and venue_id in p.venue_ids)


def owns(p: Principal, buyer_id: str) -> bool:
    return p.has_role("buyer") and not p.is_service and p.subject == buyer_id


def can_read(p: Principal, payment: Payment) -> bool:
    return is_privileged(p) or owns(p, payment.buyer_id) or manages_venue(p, payment.venue_id)


def can_refund(p: Principal, payment: Payment) -> bool:
    return is_admin(p) or owns(p, payment.buyer_id) or manages_venue(p, payment.venue_id)


def can_cancel(p: Principal, payment: Payment) -> bool:
    return is_admin(p) or owns(p, payment.buyer_id)


def _visible(p: Principal, payment: Payment) -> None:
    if not can_read(p, payment):
        raise PaymentNotFound(f"payment {payment.id} not found")


def reader(p: Principal) -> Authorize:
    """Refuses a payment the caller may not see."""
    return lambda payment: _visible(p, payment)


def _writer(p: Principal, allowed: Callable[[Principal, Payment], bool], what: str) -> Authorize:
    def authorize(payment: Payment) -> None:
        _visible(p, payment)
        if not allowed(p, payment):
            raise PaymentNotOwned(f"the caller may not {what} this payment")

    return authorize


def refunder(p: Principal) -> Authorize:
    return _writer(p, can_refund, "refund")


def canceller(p: Principal) -> Authorize:
    return _writer(p, can_cancel, "cancel")


def require_buyer(p: Principal, buyer_id: str) -> None:
    """Buyers pay only for themselves (admins for anyone)."""
    if not is_admin(p) and p.subject != buyer_id:
        raise BuyerMismatch("buyers pay only for themselves")


def require_override(p: Principal) -> None:
    if not is_privileged(p):
        raise OverrideNotAllowed("only admins and services may override the jurisdiction or tier")


def require_venue(p: Principal, venue_id: str) -> None:
    if not manages_venue(p, venue_id):
        raise VenueNotManaged(f"the caller does not manage venue {venue_id}")


def scope(p: Principal, flt: PaymentFilter) -> PaymentFilter:
    """Narrow a List filter to what the caller may see, or refuse a filter outside it."""
    if is_privileged(p):
        return flt
    managed = p.venue_ids if p.has_role("venue_admin") else frozenset()
    requested = set(flt.venue_ids)
    if managed and ((requested and requested <= managed) or not p.has_role("buyer")):
        if requested - managed:
            raise PaymentsNotVisible("the caller does not manage these venues")
        return dataclasses.replace(flt, venue_ids=sorted(requested or managed))
    if p.has_role("buyer"):
        if flt.buyer_id and flt.buyer_id != p.subject:
            raise PaymentsNotVisible("buyers list only their own payments")
        return dataclasses.replace(flt, buyer_id=p.subject)
    raise PaymentsNotVisible("these payments are not visible to the caller")
