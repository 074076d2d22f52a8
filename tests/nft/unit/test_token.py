"""Token encoding without a chain: error classification, the one-transaction size estimate,
addresses and keys (parsing, derivation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from solders.keypair import Keypair
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)

from meshkit.settings import SettingsError
from nft_service.adapters.chain.base import ErrorKind, classify_transaction_error
from nft_service.adapters.chain.token import (
    MAX_TRANSACTION_SIZE,
    estimated_mint_size,
    is_address,
    parse_address,
)
from nft_service.adapters.keys import Derivation, parse_keypair
from nft_service.domain.metadata import max_uri_length, onchain_metadata, token_name
from nft_service.domain.model import MintRequest, Priority, TicketSpec
from nft_service.domain.rules import mint_violations


def test_transaction_errors_are_classified() -> None:
    funding = frozenset({0})
    custom = TransactionErrorInstructionError
    assert classify_transaction_error(custom(0, InstructionErrorCustom(1)), funding).kind is (
        ErrorKind.INSUFFICIENT_FUNDS
    )
    assert classify_transaction_error(custom(0, InstructionErrorCustom(0)), funding).kind is (
        ErrorKind.ACCOUNT_IN_USE
    )
    assert classify_transaction_error(custom(3, InstructionErrorCustom(1)), funding).kind is (
        ErrorKind.PROGRAM_ERROR
    )
    fieldless = TransactionErrorFieldless
    for err, kind in [
        (fieldless.BlockhashNotFound, ErrorKind.BLOCKHASH_EXPIRED),
        (fieldless.AlreadyProcessed, ErrorKind.ALREADY_PROCESSED),
        (fieldless.InsufficientFundsForFee, ErrorKind.INSUFFICIENT_FUNDS),
        (fieldless.AccountNotFound, ErrorKind.INSUFFICIENT_FUNDS),
    ]:
        assert classify_transaction_error(err, funding).kind is kind


def test_keys_parse_every_format_and_never_echo_secrets() -> None:
    keypair = Keypair()
    assert parse_keypair(str(keypair), source="K").pubkey() == keypair.pubkey()
    assert parse_keypair(json.dumps(list(bytes(keypair))), source="K").pubkey() == (
        keypair.pubkey()
    )
    seed = bytes(range(32))
    assert parse_keypair(json.dumps(list(seed)), source="K").pubkey() == (
        Keypair.from_seed(seed).pubkey()
    )
    secret = str(keypair)[:-3] + "xyz"
    with pytest.raises(SettingsError) as info:
        parse_keypair(secret, source="NFT_PAYER_KEY")
    assert secret not in str(info.value) and "NFT_PAYER_KEY" in str(info.value)


def test_derivation_is_deterministic_and_separated() -> None:
    one, other = Derivation(b"s" * 32), Derivation(b"t" * 32)
    assert one.mint_seed("p", "t1") == one.mint_seed("p", "t1")
    assert len(one.mint_seed("p", "t1")) == 32
    assert one.mint_seed("p", "t1") != one.mint_seed("p", "t2")
    assert one.mint_seed("ab", "c") != one.mint_seed("a", "bc")
    assert one.mint_seed("p", "t1") != other.mint_seed("p", "t1")
    assert one.custodial_address("u1") == one.custodial_address("u1")
    assert one.custodial_address("u1") != one.custodial_address("u2")


def test_addresses_must_decode_to_32_bytes() -> None:
    wallet = str(Keypair().pubkey())
    assert is_address(wallet) and parse_address(wallet) is not None
    # The contract's pattern (base58, 32-44 characters) lets these through; they are not keys.
    assert not is_address("z" * 44)  # more than 32 bytes
    assert not is_address("2" * 32)  # fewer than 32 bytes
    assert not is_address("short")


def _spec(**changes: str) -> TicketSpec:
    values = {
        "event_name": "The Band",
        "venue_name": "Hall",
        "section": "A",
        "row": "1",
        "seat": "2",
        "ticket_type": "VIP",
    }
    values.update(changes)
    return TicketSpec(
        ticket_id="t1",
        owner_wallet="",
        event_starts_at=datetime(2026, 5, 1, 20, tzinfo=UTC),
        image_url="https://img.example/a.png",
        **values,
    )


def _fits(spec: TicketSpec, base_url: str) -> list[tuple[str, str]]:
    """The request rules as MintTickets applies them (domain rule, adapter's measure)."""
    uri = "u" * max_uri_length(base_url)
    found = mint_violations(
        MintRequest("p", "o", "e", "v", "b", Priority.STANDARD, (spec,)),
        max_batch=10,
        is_address=is_address,
        transaction_size=lambda s: estimated_mint_size(
            onchain_metadata(name=token_name(s), symbol="TIX", uri=uri)
        ),
        max_transaction_size=MAX_TRANSACTION_SIZE,
    )
    return [(v.field, v.description) for v in found]


def test_name_and_transaction_size_limits_are_enforced_at_validation() -> None:
    # Every field at its contract maximum fits: only name, symbol and uri go on chain.
    widest = _spec(
        event_name="é" * 48,
        venue_name="é" * 48,
        section="é" * 16,
        row="é" * 8,
        seat="é" * 8,
        ticket_type="é" * 32,
    )
    assert _fits(widest, "https://tkt.example/m") == []
    assert _fits(_spec(name="é" * 16), "https://tkt.example/m") == []  # 32 bytes
    assert _fits(_spec(name="é" * 16 + "x"), "https://tkt.example/m") == [
        ("tickets[0].name", "at most 32 bytes (UTF-8)")
    ]
    # Outside production the base URL has no length limit; the transaction still has one.
    ((field, problem),) = _fits(_spec(), "https://x/" + "p" * 1100)
    assert field == "tickets[0]" and "one Solana transaction" in problem
