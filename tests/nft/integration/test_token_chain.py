"""The ticket NFT transaction on the real Token-2022 program (LiteSVM), without the service.

Checks every property the issue asks of a ticket NFT by decoding the accounts the program wrote
— for the current layout (name, symbol and uri only) and for the earlier one (the facts as
additional fields, which the builder still writes when a test gives it some) — and the
platform's powers as permanent delegate and freeze authority.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from nft_service.adapters.chain import ErrorKind, LocalChain, TxStatus
from nft_service.adapters.chain.token import (
    MAX_TRANSACTION_SIZE,
    MINT_FUNDING,
    SIGNATURE_FEE,
    TOKEN_2022,
    TOKEN_ACCOUNT_SPACE,
    TRANSFER_FUNDING,
    associated_token_address,
    burn_instructions,
    decode_mint,
    decode_token_account,
    estimated_mint_size,
    freeze_instructions,
    mint_account_len,
    mint_address,
    mint_instructions,
    sign,
    transfer_instructions,
)
from nft_service.domain.metadata import (
    MAX_NAME_BYTES,
    TicketMetadata,
    legacy_metadata_uri,
    max_uri_length,
    metadata_uri,
)

METADATA = TicketMetadata(
    name="BAND A-12-7",
    symbol="TIX",
    uri=metadata_uri("https://tkt.example/m", "ab" * 32),
)
LEGACY_METADATA = TicketMetadata(
    name="The Band: Fall Tour",
    symbol="TIX",
    uri=legacy_metadata_uri("http://127.0.0.1:8082/metadata", "ab" * 32),
    fields=(
        ("event", "The Band: Fall Tour"),
        ("venue", "Grand Hall"),
        ("date", "2026-05-01T20:00:00Z"),
        ("section", "A"),
        ("row", "12"),
        ("seat", "7"),
        ("type", "VIP"),
    ),
)


@pytest.fixture
async def chain(tmp_path: Path) -> LocalChain:
    chain = LocalChain(state_file=tmp_path / "chain.jsonl")
    await chain.start()
    yield chain  # type: ignore[misc]
    await chain.close()


async def _mint(
    chain: LocalChain,
    payer: Keypair,
    holder: Pubkey,
    seed: str,
    metadata: TicketMetadata = METADATA,
) -> tuple[Pubkey, object]:
    seed = seed.ljust(32, "0")  # the service's seeds are always 32 characters
    lamports = await chain.rent_exempt_minimum(mint_account_len(metadata))
    blockhash = await chain.latest_blockhash()
    ixs = mint_instructions(
        payer=payer.pubkey(), seed=seed, holder=holder, metadata=metadata, mint_lamports=lamports
    )
    tx = sign(ixs, payer, blockhash.blockhash)
    assert len(bytes(tx)) <= MAX_TRANSACTION_SIZE
    assert estimated_mint_size(metadata) >= len(bytes(tx)) >= estimated_mint_size(metadata) - 8
    outcome = await chain.submit(tx, blockhash, MINT_FUNDING)
    return mint_address(payer.pubkey(), seed), outcome


@pytest.mark.parametrize("metadata", [METADATA, LEGACY_METADATA], ids=["current", "earlier"])
async def test_ticket_nft_has_every_property_on_chain(
    chain: LocalChain, metadata: TicketMetadata
) -> None:
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    holder = Keypair().pubkey()
    before = (await chain.get_balance(payer.pubkey())).lamports
    mint, outcome = await _mint(chain, payer, holder, "seed-0001", metadata)
    assert outcome.status is TxStatus.LANDED  # type: ignore[attr-defined]

    accounts = (await chain.get_accounts([mint, associated_token_address(holder, mint)])).accounts
    mint_account, ata = accounts
    assert mint_account is not None and mint_account.owner == TOKEN_2022
    state = decode_mint(bytes(mint_account.data))
    assert state.decimals == 0
    assert state.supply == 1
    assert state.mint_authority is None  # removed in the same transaction
    assert state.freeze_authority == payer.pubkey()
    assert state.permanent_delegate == payer.pubkey()
    assert state.metadata_address == mint  # metadata lives on the mint itself
    assert state.update_authority == payer.pubkey()
    assert (state.name, state.symbol, state.uri) == (metadata.name, metadata.symbol, metadata.uri)
    assert state.fields == dict(metadata.fields)  # none on a current ticket
    assert ata is not None
    token = decode_token_account(bytes(ata.data))
    assert (token.mint, token.owner, token.amount, token.frozen) == (mint, holder, 1, False)

    # The account is exactly as large as its contents, funded with exactly its rent-exempt
    # minimum; the payer pays the two rents and one signature fee.
    size = len(bytes(mint_account.data))
    strings = len(f"{metadata.name}{metadata.symbol}{metadata.uri}".encode())
    if not metadata.fields:
        assert size == 354 + strings
    assert size == mint_account_len(metadata)
    assert mint_account.lamports == await chain.rent_exempt_minimum(size)
    spent = before - (await chain.get_balance(payer.pubkey())).lamports
    expected = (
        await chain.rent_exempt_minimum(size)
        + await chain.rent_exempt_minimum(TOKEN_ACCOUNT_SPACE)
        + SIGNATURE_FEE
    )
    assert spent == expected


async def test_same_mint_twice_cannot_land(chain: LocalChain) -> None:
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    holder = Keypair().pubkey()
    _, first = await _mint(chain, payer, holder, "seed-dup")
    assert first.status is TxStatus.LANDED  # type: ignore[attr-defined]
    await chain.expire_blockhash()  # a fresh blockhash: different bytes, same address
    _, second = await _mint(chain, payer, holder, "seed-dup")
    assert second.status is TxStatus.FAILED  # type: ignore[attr-defined]
    assert second.error.kind is ErrorKind.ACCOUNT_IN_USE  # type: ignore[attr-defined]


async def test_insufficient_funds_is_classified(chain: LocalChain) -> None:
    poor = Keypair()
    await chain.fund(poor.pubkey(), 3_000_000)  # fee yes, rents no
    _, outcome = await _mint(chain, poor, Keypair().pubkey(), "seed-poor")
    assert outcome.error.kind is ErrorKind.INSUFFICIENT_FUNDS  # type: ignore[attr-defined]
    _, outcome = await _mint(chain, Keypair(), Keypair().pubkey(), "seed-none")
    assert outcome.error.kind is ErrorKind.INSUFFICIENT_FUNDS  # type: ignore[attr-defined]


async def test_expired_blockhash_is_classified(chain: LocalChain) -> None:
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    blockhash = await chain.latest_blockhash()
    lamports = await chain.rent_exempt_minimum(mint_account_len(METADATA))
    ixs = mint_instructions(
        payer=payer.pubkey(),
        seed="seed-exp",
        holder=Keypair().pubkey(),
        metadata=METADATA,
        mint_lamports=lamports,
    )
    tx = sign(ixs, payer, blockhash.blockhash)
    await chain.expire_blockhash()
    outcome = await chain.submit(tx, blockhash, MINT_FUNDING)
    assert outcome.error is not None and outcome.error.kind is ErrorKind.BLOCKHASH_EXPIRED


async def test_delegate_transfers_burns_and_freezes_without_holder(chain: LocalChain) -> None:
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    alice, bob = Keypair().pubkey(), Keypair().pubkey()
    mint, _ = await _mint(chain, payer, alice, "seed-move")

    blockhash = await chain.latest_blockhash()
    ixs = transfer_instructions(
        payer=payer.pubkey(),
        mint=mint,
        source=associated_token_address(alice, mint),
        destination_owner=bob,
        note="resale",
    )
    outcome = await chain.submit(sign(ixs, payer, blockhash.blockhash), blockhash, TRANSFER_FUNDING)
    assert outcome.status is TxStatus.LANDED
    assert await chain.token_accounts_of_mint(mint) == [associated_token_address(bob, mint)]

    bob_ata = associated_token_address(bob, mint)
    freeze = freeze_instructions(payer=payer.pubkey(), mint=mint, account=bob_ata, note="f")
    outcome = await chain.submit(sign(freeze, payer, blockhash.blockhash), blockhash)
    assert outcome.status is TxStatus.LANDED
    (account,) = (await chain.get_accounts([bob_ata])).accounts
    assert account is not None and decode_token_account(bytes(account.data)).frozen

    # Frozen means frozen, even for the permanent delegate: no move, no burn.
    move = transfer_instructions(
        payer=payer.pubkey(), mint=mint, source=bob_ata, destination_owner=alice, note="x"
    )
    outcome = await chain.submit(sign(move, payer, blockhash.blockhash), blockhash)
    assert outcome.status is TxStatus.FAILED

    # Burn (on another ticket): supply 0 without the holder's signature.
    other, _ = await _mint(chain, payer, alice, "seed-burn")
    alice_ata = associated_token_address(alice, other)
    burn = burn_instructions(payer=payer.pubkey(), mint=other, account=alice_ata, note="b")
    blockhash = await chain.latest_blockhash()
    outcome = await chain.submit(sign(burn, payer, blockhash.blockhash), blockhash)
    assert outcome.status is TxStatus.LANDED, outcome
    (mint_account,) = (await chain.get_accounts([other])).accounts
    assert mint_account is not None and decode_mint(bytes(mint_account.data)).supply == 0


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "chain.jsonl"
    chain = LocalChain(state_file=path)
    await chain.start()
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    holder = Keypair().pubkey()
    mint, _ = await _mint(chain, payer, holder, "seed-keep")
    balance = (await chain.get_balance(payer.pubkey())).lamports
    await chain.close()

    again = LocalChain(state_file=path)
    await again.start()
    try:
        mint_account, ata = (
            await again.get_accounts([mint, associated_token_address(holder, mint)])
        ).accounts
        assert mint_account is not None and decode_mint(bytes(mint_account.data)).supply == 1
        assert ata is not None and decode_token_account(bytes(ata.data)).amount == 1
        assert (await again.get_balance(payer.pubkey())).lamports == balance
        # And the restored mint still cannot be minted again.
        _, outcome = await _mint(again, payer, holder, "seed-keep")
        assert outcome.error.kind is ErrorKind.ACCOUNT_IN_USE  # type: ignore[attr-defined]
    finally:
        await again.close()


async def test_largest_ticket_lands(chain: LocalChain) -> None:
    """The longest name and the longest uri production allows, and a symbol of 10 bytes."""
    metadata = TicketMetadata(
        name="é" * (MAX_NAME_BYTES // 2),
        symbol="S" * 10,
        uri="https://tkt.example/1234/" + "x" * 44,
    )
    assert len(metadata.uri) == max_uri_length("https://tkt.example/1234")
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    mint, outcome = await _mint(chain, payer, Keypair().pubkey(), "seed-wide", metadata)
    assert outcome.status is TxStatus.LANDED  # type: ignore[attr-defined]
    (account,) = (await chain.get_accounts([mint])).accounts
    assert account is not None and decode_mint(bytes(account.data)).name == metadata.name
    assert len(bytes(account.data)) == 354 + 32 + 10 + 69
