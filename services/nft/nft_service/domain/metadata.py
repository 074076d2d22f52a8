"""Ticket metadata: the off-chain JSON (Metaplex standard shape, content-addressed) and what is
written on the mint itself (name, symbol, uri, ticket facts as additional fields).

The JSON is serialised canonically (sorted keys, no spaces, UTF-8), so the same ticket always has
the same bytes and the same sha256, and the on-chain uri `<base>/<sha256>.json` names content that
can be checked by anyone who fetches it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nft_service.domain.model import TicketSpec

MAX_NAME_CHARS = 32  # Metaplex display-name limit, kept for wallets that truncate
SHA_HEX = 64  # characters of a metadata document's address (sha256, hex)


@dataclass(frozen=True, slots=True)
class TicketMetadata:
    """What goes on the mint: name, symbol, uri and the ticket facts as (key, value) fields
    (how many bytes that takes on chain is the chain adapter's business)."""

    name: str
    symbol: str
    uri: str
    fields: tuple[tuple[str, str], ...]


def iso_date(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def display_name(ticket: TicketSpec) -> str:
    name = ticket.event_name.strip()
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _seat_text(ticket: TicketSpec) -> str:
    parts = [
        f"{label} {value}"
        for label, value in (
            ("section", ticket.section),
            ("row", ticket.row),
            ("seat", ticket.seat),
        )
        if value
    ]
    return ", ".join(parts) if parts else "general admission"


def metadata_json(ticket: TicketSpec, *, symbol: str, event_id: str) -> dict[str, Any]:
    """The off-chain JSON in the Metaplex token standard shape."""
    date = iso_date(ticket.event_starts_at)
    attributes: list[dict[str, str]] = [
        {"trait_type": "Event", "value": ticket.event_name},
        {"trait_type": "Venue", "value": ticket.venue_name},
        {"trait_type": "Date", "value": date},
        {"trait_type": "Section", "value": ticket.section},
        {"trait_type": "Row", "value": ticket.row},
        {"trait_type": "Seat", "value": ticket.seat},
        {"trait_type": "Ticket Type", "value": ticket.ticket_type},
    ]
    attributes = [a for a in attributes if a["value"]]
    attributes += [
        {"trait_type": key, "value": value} for key, value in sorted(ticket.attributes.items())
    ]
    files = [{"uri": ticket.image_url, "type": _image_type(ticket.image_url)}]
    return {
        "name": display_name(ticket),
        "symbol": symbol,
        "description": (
            f"{ticket.ticket_type} ticket for {ticket.event_name} at {ticket.venue_name}"
            f"{' on ' + date if date else ''} ({_seat_text(ticket)})."
        ),
        "image": ticket.image_url,
        "attributes": attributes,
        "properties": {
            "category": "image",
            "files": files if ticket.image_url else [],
            "ticket_id": ticket.ticket_id,
            "event_id": event_id,
        },
    }


def _image_type(url: str) -> str:
    lowered = url.lower().split("?", 1)[0]
    for suffix, mime in ((".png", "image/png"), (".gif", "image/gif"), (".svg", "image/svg+xml")):
        if lowered.endswith(suffix):
            return mime
    return "image/jpeg" if lowered.endswith((".jpg", ".jpeg")) else "image/png"


def canonical(document: dict[str, Any]) -> tuple[str, bytes]:
    """(sha256 hex, canonical bytes) of a JSON document."""
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(body).hexdigest(), body


def metadata_uri(base_url: str, sha: str) -> str:
    return f"{base_url.rstrip('/')}/{sha}.json"


def uri_length(base_url: str) -> int:
    """Length of every metadata uri under `base_url` (the sha has a fixed length)."""
    return len(metadata_uri(base_url, "0" * SHA_HEX))


def typical_ticket(symbol: str, uri: str) -> TicketMetadata:
    """The on-mint metadata of an average ticket, for cost estimates before any was minted."""
    return TicketMetadata(
        name="x" * 24,
        symbol=symbol,
        uri=uri,
        fields=(
            ("event", "x" * 24),
            ("venue", "x" * 16),
            ("date", "2026-01-01T20:00:00Z"),
            ("section", "AA"),
            ("row", "12"),
            ("seat", "7"),
            ("type", "General"),
        ),
    )


def onchain_metadata(ticket: TicketSpec, *, symbol: str, uri: str) -> TicketMetadata:
    """Name/symbol/uri and the ticket facts (empty ones left out) for the mint's metadata."""
    facts = (
        ("event", ticket.event_name),
        ("venue", ticket.venue_name),
        ("date", iso_date(ticket.event_starts_at)),
        ("section", ticket.section),
        ("row", ticket.row),
        ("seat", ticket.seat),
        ("type", ticket.ticket_type),
    )
    return TicketMetadata(
        name=display_name(ticket),
        symbol=symbol,
        uri=uri,
        fields=tuple((k, v) for k, v in facts if v),
    )
