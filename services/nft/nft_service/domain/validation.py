"""Request validation: every problem reported at once as field violations, before anything is
written or sent (bad input changes nothing).

Besides the usual presence/length/format checks, a ticket's facts must fit, with everything
else, in one Solana transaction (1,232 bytes): the mint is only atomic if it is one transaction.
The size is estimated from the lengths without building the transaction; the estimate is exact
up to the compact length prefixes, rounded up, so it never accepts a ticket that cannot fit.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from meshkit.errors import FieldViolation, invalid_argument
from nft_service.chain.token import MAX_TRANSACTION_SIZE, TicketMetadata, mint_instructions
from nft_service.domain.metadata import onchain_metadata
from nft_service.domain.model import MintRequest, Priority, TicketSpec

MAX_ID = 128
# Chosen so that a ticket with every field at its maximum (ASCII) fits one transaction with a
# metadata base URL of up to ~55 characters; multi-byte text is caught by the size check.
MAX_EVENT_NAME = 48
MAX_VENUE_NAME = 48
MAX_SECTION = 16
MAX_ROW_SEAT = 8
MAX_TICKET_TYPE = 32
MAX_URL = 512
MAX_ATTRIBUTES = 20
MAX_ATTRIBUTE_KEY = 64
MAX_ATTRIBUTE_VALUE = 256
MAX_NOTE = 500
SHA_HEX = 64

# Per additional field: program index, account count, two account indices, data length (<= 2),
# discriminator (8), Field::Key tag (1), two string length prefixes (8).
_FIELD_OVERHEAD = 1 + 1 + 2 + 2 + 8 + 1 + 8


def parse_address(value: str) -> Pubkey | None:
    """A base58 Solana address, or None when `value` is not one."""
    if not 32 <= len(value) <= 44:
        return None
    try:
        return Pubkey.from_string(value)
    except ValueError:
        return None


@cache
def _base_size() -> int:
    """Wire size of a mint transaction with empty name/symbol/uri and no fields."""
    payer = Pubkey.new_unique()
    ixs = mint_instructions(
        payer=payer,
        seed="0" * 32,
        holder=Pubkey.new_unique(),
        metadata=TicketMetadata(name="", symbol="", uri="", fields=()),
        mint_lamports=1,
    )
    message = Message.new_with_blockhash(ixs, payer, Hash.default())
    return len(bytes(Transaction.new_unsigned(message)))


def estimated_mint_size(metadata: TicketMetadata) -> int:
    size = _base_size() + 1  # +1: the initialize data's length prefix may grow to two bytes
    size += sum(len(s.encode()) for s in (metadata.name, metadata.symbol, metadata.uri))
    size += sum(_FIELD_OVERHEAD + len(k.encode()) + len(v.encode()) for k, v in metadata.fields)
    return size


def _text(
    violations: list[FieldViolation],
    path: str,
    value: str,
    *,
    required: bool,
    limit: int,
) -> None:
    if not value.strip():
        if required:
            violations.append(FieldViolation(path, "required"))
        return
    if len(value) > limit:
        violations.append(FieldViolation(path, f"at most {limit} characters"))
    elif any(ord(ch) < 32 for ch in value):
        violations.append(FieldViolation(path, "must not contain control characters"))


def _url(violations: list[FieldViolation], path: str, value: str) -> None:
    if not value:
        return
    if len(value) > MAX_URL:
        violations.append(FieldViolation(path, f"at most {MAX_URL} characters"))
    elif not value.startswith(("https://", "http://", "ipfs://", "ar://")):
        violations.append(FieldViolation(path, "must be an https, http, ipfs or ar URL"))


def check_wallet(violations: list[FieldViolation], path: str, value: str) -> None:
    if value and parse_address(value) is None:
        violations.append(FieldViolation(path, "not a base58 Solana address"))


def _ticket(
    violations: list[FieldViolation],
    path: str,
    ticket: TicketSpec,
    *,
    symbol: str,
    uri_length: int,
) -> None:
    before = len(violations)
    _text(violations, f"{path}.ticket_id", ticket.ticket_id, required=True, limit=MAX_ID)
    check_wallet(violations, f"{path}.owner_wallet", ticket.owner_wallet)
    _text(violations, f"{path}.event_name", ticket.event_name, required=True, limit=MAX_EVENT_NAME)
    _text(violations, f"{path}.venue_name", ticket.venue_name, required=True, limit=MAX_VENUE_NAME)
    if ticket.event_starts_at is None:
        violations.append(FieldViolation(f"{path}.event_starts_at", "required"))
    _text(violations, f"{path}.section", ticket.section, required=False, limit=MAX_SECTION)
    for name in ("row", "seat"):
        limit = MAX_ROW_SEAT
        _text(violations, f"{path}.{name}", getattr(ticket, name), required=False, limit=limit)
    _text(
        violations,
        f"{path}.ticket_type",
        ticket.ticket_type,
        required=True,
        limit=MAX_TICKET_TYPE,
    )
    _url(violations, f"{path}.image_url", ticket.image_url)
    if len(ticket.attributes) > MAX_ATTRIBUTES:
        violations.append(FieldViolation(f"{path}.attributes", f"at most {MAX_ATTRIBUTES}"))
    for key, value in ticket.attributes.items():
        _text(violations, f"{path}.attributes", key, required=True, limit=MAX_ATTRIBUTE_KEY)
        _text(
            violations,
            f"{path}.attributes[{key}]",
            value,
            required=False,
            limit=MAX_ATTRIBUTE_VALUE,
        )
    if len(violations) == before:
        metadata = onchain_metadata(ticket, symbol=symbol, uri="u" * uri_length)
        size = estimated_mint_size(metadata)
        if size > MAX_TRANSACTION_SIZE:
            violations.append(
                FieldViolation(
                    path,
                    f"ticket facts too long for one Solana transaction ({size} > "
                    f"{MAX_TRANSACTION_SIZE} bytes): shorten event_name or venue_name",
                )
            )


def validate_mint(request: MintRequest, *, max_batch: int, symbol: str, base_url: str) -> None:
    """Raise INVALID_ARGUMENT listing every problem of a MintTickets request."""
    violations: list[FieldViolation] = []
    for name in ("payment_id", "order_id", "event_id", "venue_id", "buyer_id"):
        _text(violations, name, getattr(request, name), required=True, limit=MAX_ID)
    if request.priority not in set(Priority):
        violations.append(FieldViolation("priority", "unknown priority"))
    if not request.tickets:
        violations.append(FieldViolation("tickets", "at least one ticket is required"))
    elif len(request.tickets) > max_batch:
        violations.append(FieldViolation("tickets", f"at most {max_batch} tickets per request"))
    else:
        uri_length = len(base_url.rstrip("/")) + 1 + SHA_HEX + len(".json")
        seen: set[str] = set()
        for i, ticket in enumerate(request.tickets):
            _ticket(violations, f"tickets[{i}]", ticket, symbol=symbol, uri_length=uri_length)
            if ticket.ticket_id in seen:
                violations.append(FieldViolation(f"tickets[{i}].ticket_id", "duplicate"))
            seen.add(ticket.ticket_id)
    raise_if(violations)


def raise_if(violations: Iterable[FieldViolation]) -> None:
    found = list(violations)
    if found:
        raise invalid_argument(found)


def check_id(violations: list[FieldViolation], path: str, value: str) -> None:
    _text(violations, path, value, required=True, limit=MAX_ID)


def check_note(violations: list[FieldViolation], path: str, value: str) -> None:
    if len(value) > MAX_NOTE:
        violations.append(FieldViolation(path, f"at most {MAX_NOTE} characters"))
