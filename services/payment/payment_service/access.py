"""Who may see or change which payment, venue balance or payout (beyond the RPC policy table).

The policy table (policy.py) says which roles may call an RPC at all; these rules say which
objects they may touch: a buyer their own payments (principal subject = buyer id), a venue admin
the venues listed in their token's `venue_ids` claim, an admin everything. Services named in the
policy act on behalf of the mesh and see everything they are allowed to call.
"""

from __future__ import annotations

from meshkit.context import Principal, current_call
from meshkit.errors import PermissionDenied


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


def venue_ids(p: Principal) -> frozenset[str]:
    raw = p.claims.get("venue_ids", [])
    if isinstance(raw, list):
        return frozenset(str(v) for v in raw)
    return frozenset()


def manages_venue(p: Principal, venue_id: str) -> bool:
    return is_admin(p) or (p.has_role("venue_admin") and venue_id in venue_ids(p))


def owns(p: Principal, buyer_id: str) -> bool:
    return p.has_role("buyer") and not p.is_service and p.subject == buyer_id


def can_read_payment(p: Principal, buyer_id: str, venue_id: str) -> bool:
    return is_privileged(p) or owns(p, buyer_id) or manages_venue(p, venue_id)


def can_refund_payment(p: Principal, buyer_id: str, venue_id: str) -> bool:
    return is_admin(p) or owns(p, buyer_id) or manages_venue(p, venue_id)


def can_cancel_payment(p: Principal, buyer_id: str) -> bool:
    return is_admin(p) or owns(p, buyer_id)
