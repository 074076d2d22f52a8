"""Pure parts of the nft service: retry classification, job status, keys, metadata, sizes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)

from meshkit.errors import InvalidArgument
from meshkit.settings import SettingsError
from nft_service.chain.base import ErrorKind, classify_transaction_error
from nft_service.domain.metadata import canonical, metadata_json, onchain_metadata
from nft_service.domain.model import JobStatus, MintRequest, MintState, TicketSpec, job_status
from nft_service.domain.retry import RetryPolicy, decide
from nft_service.domain.validation import validate_mint
from nft_service.keys import Derivation, ensure_dev_payer, parse_keypair

POLICY = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=8.0)


@pytest.mark.parametrize(
    ("kind", "attempts", "state", "immediate"),
    [
        (ErrorKind.INSUFFICIENT_FUNDS, 1, MintState.FAILED, True),
        (ErrorKind.PROGRAM_ERROR, 1, MintState.FAILED, True),
        (ErrorKind.ACCOUNT_IN_USE, 1, MintState.FAILED, True),
        (ErrorKind.BLOCKHASH_EXPIRED, 1, MintState.RETRYING, True),
        (ErrorKind.RATE_LIMITED, 1, MintState.RETRYING, False),
        (ErrorKind.NODE_BEHIND, 2, MintState.RETRYING, False),
        (ErrorKind.UNAVAILABLE, 3, MintState.RETRYING, False),
        (ErrorKind.CONFIRM_TIMEOUT, 4, MintState.DEAD_LETTERED, True),
        (ErrorKind.BLOCKHASH_EXPIRED, 4, MintState.DEAD_LETTERED, True),
    ],
)
def test_retry_decisions(kind: ErrorKind, attempts: int, state: MintState, immediate: bool) -> None:
    decision = decide(kind, attempts, POLICY, rng=random.Random(1))
    assert decision.state is state
    assert (decision.delay == 0) is immediate


def test_backoff_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(7)
    delays = [POLICY.backoff(n, rng) for n in range(1, 10)]
    assert all(0 < d <= 8.0 for d in delays)
    assert decide(ErrorKind.RATE_LIMITED, 1, POLICY, retry_after=30.0).delay == 30.0


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


def test_job_status_follows_its_tickets() -> None:
    m, f, q, d = MintState.MINTED, MintState.FAILED, MintState.QUEUED, MintState.DEAD_LETTERED
    assert job_status([q, q], touched=False) is JobStatus.QUEUED
    assert job_status([m, q], touched=True) is JobStatus.RUNNING
    assert job_status([m, m], touched=True) is JobStatus.SUCCEEDED
    assert job_status([m, f], touched=True) is JobStatus.PARTIALLY_FAILED
    assert job_status([d, f], touched=True) is JobStatus.FAILED


def test_keys_parse_every_format_and_never_echo_secrets(tmp_path: Path) -> None:
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
    path = ensure_dev_payer(tmp_path)
    assert path.stat().st_mode & 0o077 == 0  # not readable by others
    assert ensure_dev_payer(tmp_path) == path  # generated once
    assert parse_keypair(path.read_text(), source="file").pubkey()


def test_derivation_is_deterministic_and_separated() -> None:
    one, other = Derivation(b"s" * 32), Derivation(b"t" * 32)
    assert one.mint_seed("p", "t1") == one.mint_seed("p", "t1")
    assert len(one.mint_seed("p", "t1")) == 32
    assert one.mint_seed("p", "t1") != one.mint_seed("p", "t2")
    assert one.mint_seed("ab", "c") != one.mint_seed("a", "bc")
    assert one.mint_seed("p", "t1") != other.mint_seed("p", "t1")
    assert one.custodial_address("u1") == one.custodial_address("u1")
    assert one.custodial_address("u1") != one.custodial_address("u2")


def _spec(**changes: object) -> TicketSpec:
    values: dict[str, object] = {
        "ticket_id": "t1",
        "owner_wallet": "",
        "event_name": "The Band",
        "venue_name": "Hall",
        "event_starts_at": datetime(2026, 5, 1, 20, tzinfo=UTC),
        "section": "A",
        "row": "1",
        "seat": "2",
        "ticket_type": "VIP",
        "image_url": "https://img.example/a.png",
    }
    values.update(changes)
    return TicketSpec(**values)  # type: ignore[arg-type]


def test_metadata_is_canonical_and_metaplex_shaped() -> None:
    sha, body = canonical(metadata_json(_spec(), symbol="TIX", event_id="e1"))
    again, same = canonical(metadata_json(_spec(), symbol="TIX", event_id="e1"))
    assert (sha, body) == (again, same)
    document = json.loads(body)
    assert document["properties"]["files"][0]["type"] == "image/png"
    assert canonical(metadata_json(_spec(seat="3"), symbol="TIX", event_id="e1"))[0] != sha
    onchain = onchain_metadata(_spec(section="", row="", seat=""), symbol="TIX", uri="u")
    assert [k for k, _ in onchain.fields] == ["event", "venue", "date", "type"]


def test_transaction_size_limit_is_enforced_at_validation() -> None:
    def request(**changes: object) -> MintRequest:
        return MintRequest("p", "o", "e", "v", "b", 3, (_spec(**changes),))

    # Every field at its maximum still fits, with a realistic production base URL.
    widest = {
        "event_name": "e" * 48,
        "venue_name": "v" * 48,
        "section": "s" * 16,
        "row": "r" * 8,
        "seat": "n" * 8,
        "ticket_type": "t" * 32,
    }
    base = "https://nft.tickettoken.example/metadata/v1"
    validate_mint(request(**widest), max_batch=10, symbol="TIX", base_url=base)
    longest = {"event_name": "é" * 48, "venue_name": "é" * 48, "ticket_type": "é" * 32}
    with pytest.raises(InvalidArgument) as info:
        validate_mint(request(**longest), max_batch=10, symbol="TIX", base_url="https://x/m")
    assert "one Solana transaction" in info.value.field_violations[0].description
