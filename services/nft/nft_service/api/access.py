"""Row-level access: who may see which tickets (the policy table says who may call an RPC at
all; this says which rows they get). Buyers see only their own tickets; admins, venue admins
and services see all."""

from __future__ import annotations

from meshkit.context import current_call
from nft_service.domain.errors import NotYourTickets, TicketNotFound
from nft_service.domain.model import TicketNft


def buyer_scope() -> str | None:
    """The buyer a buyer-only caller is limited to, or None for privileged callers."""
    call = current_call()
    if call is None:
        return None
    principal = call.principal
    if principal.is_service or principal.has_role("admin", "venue_admin"):
        return None
    return principal.subject


def check_visible(ticket: TicketNft) -> None:
    """NOT_FOUND (not PERMISSION_DENIED) for another buyer's ticket: do not confirm it exists."""
    scope = buyer_scope()
    if scope is not None and ticket.buyer_id != scope:
        raise TicketNotFound()


def listed_buyer(requested: str) -> str:
    """The buyer filter a list runs with: a buyer's own id (asking for another's is refused)."""
    scope = buyer_scope()
    if scope is None:
        return requested
    if requested and requested != scope:
        raise NotYourTickets()
    return scope
