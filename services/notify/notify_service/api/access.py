"""Who may see or change which notification or preferences (beyond the RPC policy table).

Buyers see their own notifications and preferences (principal subject = user id); admins and
the mesh services named in the policy see everything they may call. A notification the caller
may not see is "not found".
"""

from __future__ import annotations

from collections.abc import Callable

from meshkit.context import Principal, current_call
from meshkit.errors import PermissionDenied
from notify_service.domain.errors import NotYours
from notify_service.domain.model import Notification


def principal() -> Principal:
    call = current_call()
    if call is None:  # pragma: no cover - every RPC runs inside the kit's call context
        raise PermissionDenied("no caller")
    return call.principal


def privileged(p: Principal) -> bool:
    return p.has_role("admin") or p.is_service


def may_see(p: Principal) -> Callable[[Notification], bool]:
    def check(n: Notification) -> bool:
        return privileged(p) or (bool(n.user_id) and n.user_id == p.subject)

    return check


def own_user(p: Principal) -> Callable[[str], None]:
    """For preferences: a buyer may only name themself."""

    def check(user_id: str) -> None:
        if not privileged(p) and user_id != p.subject:
            raise NotYours("preferences")

    return check


def list_scope(p: Principal, user_id: str) -> str:
    """The user filter a ListNotifications caller gets: buyers only their own."""
    if privileged(p):
        return user_id
    if user_id and user_id != p.subject:
        raise NotYours("notifications")
    return p.subject
