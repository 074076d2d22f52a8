"""Request rules the contract cannot state: they depend on settings, on other fields or on what
the chain can hold. The contract's own rules (required fields, lengths, patterns, enums) are
enforced by the kit before any handler runs; what is left is checked here, every problem at once,
before anything is written or sent (bad input changes nothing).

The on-chain name is at most 32 bytes (also a contract rule; checked here as well because
default names, costs and the transaction size rest on it). The one-transaction rule: what goes
on the mint (name, symbol, uri) must fit, with everything else, in one Solana transaction
(1,232 bytes), because the mint is only atomic if it is one transaction. The size is measured by
the caller (the chain adapter knows the wire format) and compared here.
"""

from __future__ import annotations

from collections.abc import Callable

from nft_service.domain.errors import Violation
from nft_service.domain.metadata import MAX_NAME_BYTES, utf8_len
from nft_service.domain.model import ListFilter, MintRequest, TicketSpec

NOT_AN_ADDRESS = "not a base58 Solana address (32 bytes)"


def mint_violations(
    request: MintRequest,
    *,
    max_batch: int,
    is_address: Callable[[str], bool],
    transaction_size: Callable[[TicketSpec], int],
    max_transaction_size: int,
) -> list[Violation]:
    """Every problem of a MintTickets request that the contract does not catch."""
    if len(request.tickets) > max_batch:
        return [Violation("tickets", f"at most {max_batch} tickets per request")]
    found: list[Violation] = []
    seen: set[str] = set()
    for i, ticket in enumerate(request.tickets):
        path = f"tickets[{i}]"
        if ticket.ticket_id in seen:
            found.append(Violation(f"{path}.ticket_id", "duplicate"))
        seen.add(ticket.ticket_id)
        if ticket.owner_wallet and not is_address(ticket.owner_wallet):
            found.append(Violation(f"{path}.owner_wallet", NOT_AN_ADDRESS))
        if utf8_len(ticket.name) > MAX_NAME_BYTES:
            found.append(Violation(f"{path}.name", f"at most {MAX_NAME_BYTES} bytes (UTF-8)"))
            continue
        size = transaction_size(ticket)
        if size > max_transaction_size:
            found.append(
                Violation(
                    path,
                    f"name, symbol and uri too long for one Solana transaction ({size} > "
                    f"{max_transaction_size} bytes)",
                )
            )
    return found


def destination_violations(
    to_wallet: str, to_user_id: str, *, is_address: Callable[[str], bool]
) -> list[Violation]:
    """TransferTicket: a wallet that decodes, or a user whose custodial wallet to use."""
    if to_wallet:
        return [] if is_address(to_wallet) else [Violation("to_wallet", NOT_AN_ADDRESS)]
    if not to_user_id.strip():
        return [Violation("to_wallet", "to_wallet or to_user_id is required")]
    return []


def address_violations(
    field: str, value: str, *, is_address: Callable[[str], bool]
) -> list[Violation]:
    return [] if is_address(value) else [Violation(field, NOT_AN_ADDRESS)]


def list_violations(filt: ListFilter) -> list[Violation]:
    """ListTicketNfts never scans the whole table: one of the narrowing filters is required."""
    if filt.narrows:
        return []
    return [Violation("owner_wallet", "one of owner_wallet, buyer_id, event_id, payment_id")]
