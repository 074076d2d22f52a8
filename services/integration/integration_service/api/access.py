"""Who is calling, as the use cases see it: the principal's subject, the venues in its token's
`venue_ids` claim (venue admins) and whether it is an admin. Row-level rules (a venue admin
sees and changes only their venues' connections) are applied by the use cases on `Actor`."""

from __future__ import annotations

from integration_service.domain.model import Actor
from meshkit.context import Principal, current_call
from meshkit.errors import PermissionDenied


def principal() -> Principal:
    call = current_call()
    if call is None:  # pragma: no cover - every RPC runs inside the kit's call context
        raise PermissionDenied("no caller")
    return call.principal


def actor() -> Actor:
    call = current_call()
    p = principal()
    return Actor(
        subject=p.subject,
        request_id=call.request_id if call is not None else "",
        venue_ids=p.venue_ids if p.has_role("venue_admin") else frozenset(),
        admin=p.has_role("admin"),
    )
