"""Ticket metadata: what is written on the mint (name, symbol, uri) and the off-chain JSON the uri
points to (Metaplex standard shape, content-addressed), and the check that the JSON served at a
uri is the one the uri names.

On chain, a ticket carries only name, symbol and uri: every byte there costs rent
(6,960 lamports at today's rent), so the ticket's facts (event, venue, date, section, row, seat,
type and the caller's attributes) live in the JSON as `attributes`, with the mint address in
`properties`.

The JSON is serialised canonically (sorted keys, no spaces, UTF-8), so the same ticket always has
the same bytes and the same sha256. Its uri is `<base>/<address>`, the address being the base58
of that sha256 (43 or 44 characters): anyone who fetches the document can check it. Tickets
minted with the earlier layout have uris `<base>/<sha256 hex>.json` and their facts also as
additional fields on the mint; both forms are recognised (`content_address`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from nft_service.domain.model import TicketSpec

MAX_NAME_BYTES = 32
"""Token-2022 metadata name limit we keep (Metaplex wallets show at most 32 bytes)."""
MAX_SYMBOL_BYTES = 10
"""Metaplex symbol limit."""
MAX_PRODUCTION_BASE_URL_CHARS = 24
"""Longest metadata base URL production accepts: with the 44-character address and the `/`
the uri stays at most 69 bytes (e.g. `https://tkt.example/m`, 21 characters, gives 66)."""
ADDRESS_MAX_CHARS = 44
"""Longest base58 of a 32-byte sha256 (most are 44 characters, about 6 % are 43)."""

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_HEX_JSON = re.compile(r"^([0-9a-f]{64})\.json$")


_B58_CHUNK = 58**10  # ten digits per big-number division, the rest on small numbers


def b58encode(raw: bytes) -> str:
    """Bitcoin-alphabet base58 (as Solana addresses use): leading zero bytes become '1'."""
    number = int.from_bytes(raw, "big")
    out: list[str] = []
    while number:
        number, chunk = divmod(number, _B58_CHUNK)
        for _ in range(10):
            chunk, rest = divmod(chunk, 58)
            out.append(_B58[rest])
    while out and out[-1] == "1":  # the last chunk's leading zeros
        out.pop()
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes | None:
    """The bytes of a base58 string; None when it is not base58."""
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            return None
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


@dataclass(frozen=True, slots=True)
class TicketMetadata:
    """What goes on the mint: name, symbol, uri, and additional (key, value) fields. New tickets
    have none; tickets of the earlier layout carried the ticket facts there (tests build those).
    How many bytes that takes on chain is the chain adapter's business."""

    name: str
    symbol: str
    uri: str
    fields: tuple[tuple[str, str], ...] = ()


def utf8_len(text: str) -> int:
    return len(text.encode())


def cut_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that fits in `max_bytes` UTF-8 bytes, never splitting a
    character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    # Cutting valid UTF-8 anywhere leaves at most one incomplete character at the end.
    return raw[: max(0, max_bytes)].decode(errors="ignore")


def seat_label(ticket: TicketSpec) -> str:
    """`section-row-seat` (the parts that are set), or `GA` (general admission)."""
    parts = [p.strip() for p in (ticket.section, ticket.row, ticket.seat) if p.strip()]
    return "-".join(parts) if parts else "GA"


def default_name(ticket: TicketSpec) -> str:
    """The on-chain name when the caller gives none: the event name, cut to fit, and the seat
    label, at most `MAX_NAME_BYTES` bytes."""
    label = cut_utf8(seat_label(ticket), MAX_NAME_BYTES)
    room = MAX_NAME_BYTES - utf8_len(label) - 1
    event = cut_utf8(ticket.event_name.strip(), room).rstrip() if room > 0 else ""
    return f"{event} {label}" if event else label


def token_name(ticket: TicketSpec) -> str:
    """The name written on the mint: the caller's, else the default."""
    return ticket.name or default_name(ticket)


def iso_date(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


def metadata_json(
    ticket: TicketSpec, *, name: str, symbol: str, event_id: str, mint_address: str
) -> dict[str, Any]:
    """The off-chain JSON in the Metaplex token standard shape: `name` and `symbol` as on the
    mint, the ticket's facts as attributes, the mint address in properties."""
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
        "name": name,
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
            "mint_address": mint_address,
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
    """(sha256 hex, canonical bytes) of a JSON document; the hex sha keys the stored document."""
    body = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(body).hexdigest(), body


def address_of_sha(sha_hex: str) -> str:
    """The content address (base58) of a document whose sha256 is `sha_hex`."""
    return b58encode(bytes.fromhex(sha_hex))


def sha_of_address(address: str) -> str | None:
    """The sha256 hex a content address names; None when it is not the base58 of 32 bytes."""
    raw = b58decode(address)
    if raw is None or len(raw) != 32 or b58encode(raw) != address:
        return None
    return raw.hex()


def metadata_uri(base_url: str, sha_hex: str) -> str:
    """`<base>/<base58 sha256>`: no suffix, every byte on chain costs rent."""
    return f"{base_url.rstrip('/')}/{address_of_sha(sha_hex)}"


def legacy_metadata_uri(base_url: str, sha_hex: str) -> str:
    """`<base>/<sha256 hex>.json`, the uri form of tickets minted with the earlier layout."""
    return f"{base_url.rstrip('/')}/{sha_hex}.json"


def max_uri_length(base_url: str) -> int:
    """Bytes of the longest metadata uri under `base_url`."""
    return utf8_len(base_url.rstrip("/")) + 1 + ADDRESS_MAX_CHARS


class AddressForm(enum.StrEnum):
    BASE58 = "base58"
    """`<base>/<base58 sha256>`"""
    HEX_JSON = "hex_json"
    """`<base>/<sha256 hex>.json` (earlier layout)"""


@dataclass(frozen=True, slots=True)
class ContentAddress:
    """What a uri says its document hashes to."""

    form: AddressForm
    address: str
    """As written in the uri."""
    sha_hex: str

    def of(self, body: bytes) -> str:
        """The address of `body` in this uri's form."""
        sha = hashlib.sha256(body).hexdigest()
        return sha if self.form is AddressForm.HEX_JSON else address_of_sha(sha)


def content_address(uri: str) -> ContentAddress | None:
    """The content address in a metadata uri (either form); None for any other uri."""
    try:
        path = urlsplit(uri).path
    except ValueError:
        return None
    last = path.rsplit("/", 1)[-1]
    legacy = _HEX_JSON.match(last)
    if legacy:
        return ContentAddress(AddressForm.HEX_JSON, legacy.group(1), legacy.group(1))
    sha = sha_of_address(last)
    if sha is not None:
        return ContentAddress(AddressForm.BASE58, last, sha)
    return None


class MetadataCheck(enum.StrEnum):
    NOT_CHECKED = "NOT_CHECKED"
    MATCHES = "MATCHES"
    TAMPERED = "TAMPERED"
    UNREACHABLE = "UNREACHABLE"


@dataclass(frozen=True, slots=True)
class MetadataVerdict:
    """The outcome of fetching a ticket's metadata document and hashing it."""

    check: MetadataCheck
    uri: str
    expected_address: str
    computed_address: str
    detail: str
    checked_at: datetime


def judge_document(
    uri: str, address: ContentAddress, body: bytes, checked_at: datetime
) -> MetadataVerdict:
    """MATCHES when `body` (the document served at `uri`) hashes to the uri's address."""
    computed = address.of(body)
    matches = computed == address.address
    return MetadataVerdict(
        MetadataCheck.MATCHES if matches else MetadataCheck.TAMPERED,
        uri,
        address.address,
        computed,
        "" if matches else "the document served does not hash to the address in the uri",
        checked_at,
    )


def onchain_metadata(*, name: str, symbol: str, uri: str) -> TicketMetadata:
    """What the mint of a new ticket carries: name, symbol and uri, nothing else."""
    return TicketMetadata(name=name, symbol=symbol, uri=uri)


def largest_onchain(symbol: str, base_url: str) -> TicketMetadata:
    """The on-mint metadata of the largest ticket under these settings (longest name, longest
    uri): a cost estimate before any ticket was minted never under-estimates."""
    return onchain_metadata(
        name="x" * MAX_NAME_BYTES, symbol=symbol, uri="u" * max_uri_length(base_url)
    )
