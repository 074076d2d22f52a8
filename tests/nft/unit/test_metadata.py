"""The on-chain metadata of a ticket without a chain: names that fit in 32 bytes, the uri as the
content address of the JSON (both forms), the tamper verdict, the mint's size and cost
arithmetic, and the settings that bound what goes on chain."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from meshkit.settings import SettingsError, load_settings
from nft_service.adapters.chain.base import Rent
from nft_service.adapters.chain.token import (
    SIGNATURE_FEE,
    TOKEN_ACCOUNT_SPACE,
    mint_account_len,
    mint_cost,
)
from nft_service.domain.metadata import (
    MAX_NAME_BYTES,
    AddressForm,
    MetadataCheck,
    TicketMetadata,
    b58decode,
    b58encode,
    canonical,
    content_address,
    cut_utf8,
    default_name,
    judge_document,
    legacy_metadata_uri,
    max_uri_length,
    metadata_json,
    metadata_uri,
    sha_of_address,
    token_name,
)
from nft_service.domain.model import TicketSpec
from nft_service.settings import NftSettings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
RENT = Rent(base=128 * 6960, per_byte=6960)  # today's mainnet line, for arithmetic only


def _spec(**changes: object) -> TicketSpec:
    values: dict[str, object] = {
        "ticket_id": "t1",
        "owner_wallet": "",
        "event_name": "The Band: Fall Tour",
        "venue_name": "Grand Hall",
        "event_starts_at": datetime(2026, 5, 1, 20, tzinfo=UTC),
        "section": "A",
        "row": "12",
        "seat": "7",
        "ticket_type": "VIP",
        "image_url": "https://img.example/a.png",
    }
    values.update(changes)
    return TicketSpec(**values)  # type: ignore[arg-type]


@given(st.binary(min_size=0, max_size=40))
def test_base58_is_the_solana_alphabet_and_round_trips(raw: bytes) -> None:
    assert b58decode(b58encode(raw)) == raw
    if len(raw) == 32:
        assert b58encode(raw) == str(Pubkey.from_bytes(raw))


def test_content_addresses_name_exactly_32_bytes() -> None:
    sha = hashlib.sha256(b"doc").hexdigest()
    address = b58encode(bytes.fromhex(sha))
    assert 43 <= len(address) <= 44 and sha_of_address(address) == sha
    assert sha_of_address("1" + address) is None  # 33 bytes
    assert sha_of_address(address[:-1] + "0") is None  # not base58
    assert sha_of_address(address[:20]) is None


@given(
    event=st.text(min_size=1, max_size=48),
    section=st.text(max_size=16),
    row=st.text(max_size=8),
    seat=st.text(max_size=8),
)
def test_default_name_always_fits_and_never_splits_a_character(
    event: str, section: str, row: str, seat: str
) -> None:
    spec = _spec(event_name=event, section=section, row=row, seat=seat)
    name = default_name(spec)
    raw = name.encode()  # would raise on a lone surrogate half: characters are whole
    assert len(raw) <= MAX_NAME_BYTES
    assert name.endswith(cut_utf8(name, len(raw)))


def test_default_name_is_the_event_cut_to_fit_and_the_seat() -> None:
    assert default_name(_spec()) == "The Band: Fall Tour A-12-7"
    assert default_name(_spec(section="", row="", seat="")) == "The Band: Fall Tour GA"
    # 26 bytes of room for the event: the cut falls inside "ï" (2 bytes), which is dropped.
    long = default_name(_spec(event_name="Ünïcødé" * 6, section="VIP", row="", seat="1"))
    assert long == "ÜnïcødéÜnïcødéÜn VIP-1" and len(long.encode()) == 31
    assert cut_utf8("aé", 2) == "a"  # never half of é
    assert token_name(_spec(name="BAND A12-7")) == "BAND A12-7"


def test_json_holds_the_facts_and_the_mint_address() -> None:
    mint = str(Pubkey.new_unique())
    document = metadata_json(
        _spec(attributes={"Door": "North"}),
        name="BAND A12-7",
        symbol="TIX",
        event_id="e1",
        mint_address=mint,
    )
    sha, body = canonical(document)
    assert json.loads(body) == document and hashlib.sha256(body).hexdigest() == sha
    assert (document["name"], document["symbol"]) == ("BAND A12-7", "TIX")
    assert document["properties"]["mint_address"] == mint
    traits = {a["trait_type"]: a["value"] for a in document["attributes"]}
    assert traits == {
        "Event": "The Band: Fall Tour",
        "Venue": "Grand Hall",
        "Date": "2026-05-01T20:00:00Z",
        "Section": "A",
        "Row": "12",
        "Seat": "7",
        "Ticket Type": "VIP",
        "Door": "North",
    }


def test_uris_are_content_addresses_in_both_forms() -> None:
    sha, body = canonical({"name": "x"})
    uri = metadata_uri("https://tkt.example/m/", sha)
    address = content_address(uri)
    assert address is not None and address.form is AddressForm.BASE58
    assert uri == f"https://tkt.example/m/{address.address}"  # no suffix
    assert len(uri) <= max_uri_length("https://tkt.example/m") == 66
    legacy = content_address(legacy_metadata_uri("http://127.0.0.1:8082/metadata", sha))
    assert legacy is not None and legacy.form is AddressForm.HEX_JSON and legacy.address == sha
    assert content_address("https://img.example/a.png") is None

    assert judge_document(uri, address, body, NOW).check is MetadataCheck.MATCHES
    changed = judge_document(uri, address, body + b" ", NOW)
    assert changed.check is MetadataCheck.TAMPERED
    assert changed.expected_address == address.address != changed.computed_address
    assert judge_document("u", legacy, body, NOW).computed_address == sha


def test_mint_size_is_exactly_name_symbol_and_uri() -> None:
    empty = TicketMetadata(name="", symbol="", uri="")
    assert mint_account_len(empty) == 354
    ticket = TicketMetadata(name="BAND A12-7", symbol="TIX", uri="u" * 66)
    assert mint_account_len(ticket) == 354 + 10 + 3 + 66
    cost = mint_cost(ticket, RENT)
    assert cost.mint_rent == (128 + 433) * 6960
    assert cost.token_account_rent == (128 + TOKEN_ACCOUNT_SPACE) * 6960 == 2_074_080
    assert cost.total == 5_433_800 + 6960 * (10 + 3 + 66) == cost.mint_rent + 2_074_080 + 5000
    assert cost.fee == SIGNATURE_FEE
    # The earlier layout: every fact as an additional field (4-byte prefixes for key and value).
    legacy = TicketMetadata("n", "s", "u", fields=(("seat", "7"),))
    assert mint_account_len(legacy) == 354 + 3 + (4 + 4) + (4 + 1)


def test_symbol_and_production_base_url_limits_are_settings_errors() -> None:
    base = {"database_url": "postgresql://db/x", "redis_url": "redis://r"}
    with pytest.raises(SettingsError) as info:
        load_settings(NftSettings, **base, nft_symbol="TICKETSXYZW")  # 11 bytes
    assert "NFT_SYMBOL" in str(info.value) and "10 bytes" in str(info.value)
    assert load_settings(NftSettings, **base, nft_symbol="TICKETSXYZ").nft_symbol == "TICKETSXYZ"
    with pytest.raises(SettingsError):
        load_settings(NftSettings, **base, nft_symbol="TIXÉÉÉÉÉ")  # 8 characters, 13 bytes

    production = {
        **base,
        "app_env": "production",
        "solana_chain": "rpc",
        "solana_rpc_url": "https://api.mainnet-beta.solana.com",
    }
    too_long = "https://nft.tickettoken.example/metadata"
    with pytest.raises(SettingsError) as info:
        load_settings(NftSettings, **production, nft_metadata_base_url=too_long)
    assert "NFT_METADATA_BASE_URL is longer than 24 characters" in str(info.value)
    for fits in ("https://tkt.example/m", "https://tkt.example/m/", "https://t.example/123456"):
        settings = NftSettings(**production, nft_metadata_base_url=fits)  # type: ignore[arg-type]
        assert not [p for p in settings.production_problems() if "METADATA" in p], fits
