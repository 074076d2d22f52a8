"""MintTickets over gRPC, minted on LiteSVM: what lands on chain (name, symbol and a
content-addressed uri, nothing else), what it cost, exactly once, and bad input.

The service runs in-process on port 0 against the embedded Postgres and Redis with its local
chain; tickets are read back from the chain itself (not from our records).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from meshdev.testing.rpc import reason, violations
from meshkit.server import App
from nft_service.adapters.chain.token import (
    SIGNATURE_FEE,
    TOKEN_2022,
    TOKEN_ACCOUNT_SPACE,
    associated_token_address,
    decode_mint,
    decode_token_account,
)
from nft_service.domain.metadata import b58encode
from tests.nft.integration.support import (
    AUD,
    Start,
    count_ticket_mints,
    local_chain,
    mint_request,
    outbox_events,
    payer_of,
    ticket,
    wait_job,
)
from tickettoken.nft.v1 import events_pb2, nft_pb2, nft_pb2_grpc


async def test_minted_ticket_read_back_from_chain(
    nft_app: App, stub: Any, payment_md: Any, postgres_url: str
) -> None:
    holder = Keypair().pubkey()
    request = mint_request(count=1, owner=str(holder))
    request.tickets.append(ticket("custodial-1", seat="8"))  # no wallet: custodial
    request.tickets[1].name = "BAND A12-8"
    chain = local_chain(nft_app)
    payer = payer_of(nft_app)
    balance_before = (await chain.get_balance(payer)).lamports
    reply = await stub.MintTickets(request, metadata=payment_md)
    assert reply.job.status == nft_pb2.MINT_JOB_STATUS_QUEUED
    assert [r.state for r in reply.job.results] == [nft_pb2.MINT_STATE_QUEUED] * 2
    job = await wait_job(stub, payment_md, reply.job.id)
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    first, custodial = job.results
    assert first.owner_wallet == str(holder) and not first.custodial
    assert custodial.custodial and custodial.owner_wallet != str(holder)
    assert first.mint_address == reply.job.results[0].mint_address  # fixed before the send

    mint = Pubkey.from_string(first.mint_address)
    accounts = await chain.get_accounts([mint, associated_token_address(holder, mint)])
    mint_account, ata = accounts.accounts
    assert mint_account is not None and mint_account.owner == TOKEN_2022
    state = decode_mint(bytes(mint_account.data))
    assert state.decimals == 0
    assert state.supply == 1
    assert state.mint_authority is None
    assert state.name == "The Band: Fall Tour A-12-0"  # no name given: event and seat
    assert state.symbol == "TIX"
    assert state.uri == first.metadata_uri
    assert state.fields == {}  # the facts are in the JSON only
    assert state.permanent_delegate == payer and state.freeze_authority == payer
    assert state.metadata_address == mint and state.update_authority == payer
    # Exactly the bytes name, symbol and uri need, funded with exactly the rent for them.
    size = len(bytes(mint_account.data))
    assert size == 354 + len(f"{state.name}{state.symbol}{state.uri}".encode())
    mint_rent = await chain.rent_exempt_minimum(size)
    assert mint_account.lamports == mint_rent
    assert ata is not None
    token = decode_token_account(bytes(ata.data))
    assert (token.owner, token.amount, token.frozen) == (holder, 1, False)

    # The off-chain metadata: served over HTTP at the on-chain uri, which is its content
    # address (base58 sha256, no suffix); the facts are its attributes, the mint in properties.
    assert state.uri == f"http://127.0.0.1:{nft_app.http_port}/m/{state.uri.rsplit('/', 1)[1]}"
    async with aiohttp.ClientSession() as session, session.get(state.uri) as resp:
        assert resp.status == 200
        body = await resp.read()
    assert b58encode(hashlib.sha256(body).digest()) == state.uri.rsplit("/", 1)[1]
    document = json.loads(body)
    assert {"name", "symbol", "description", "image", "attributes", "properties"} <= set(document)
    assert (document["name"], document["symbol"]) == (state.name, state.symbol)
    assert document["properties"]["mint_address"] == first.mint_address
    traits = {a["trait_type"]: a["value"] for a in document["attributes"]}
    assert traits == {
        "Event": "The Band: Fall Tour",
        "Venue": "Grand Hall",
        "Date": "2026-05-01T20:00:00Z",
        "Section": "A",
        "Row": "12",
        "Seat": "0",
        "Ticket Type": "VIP",
        "Door": "North",
    }
    (other,) = (await chain.get_accounts([Pubkey.from_string(custodial.mint_address)])).accounts
    assert other is not None and decode_mint(bytes(other.data)).name == "BAND A12-8"

    # Our record agrees with the chain.
    got = await stub.GetTicketNft(
        nft_pb2.GetTicketNftRequest(ticket_id=first.ticket_id, verify_on_chain=True),
        metadata=payment_md,
    )
    assert got.nft.status == nft_pb2.TICKET_NFT_STATUS_ACTIVE
    assert got.nft.mint_signature == first.signature
    assert got.on_chain.exists and got.on_chain.matches_record
    assert got.on_chain.holder_wallet == str(holder)
    assert got.nft.name == state.name

    # The recorded cost is both rents at the chain's rent for these sizes plus the fee, and is
    # what the payer's balance lost.
    token_account_rent = await chain.rent_exempt_minimum(TOKEN_ACCOUNT_SPACE)
    assert got.nft.mint_account_size == size
    assert got.nft.cost_lamports == mint_rent + token_account_rent + SIGNATURE_FEE
    other_nft = await stub.GetTicketNft(
        nft_pb2.GetTicketNftRequest(ticket_id=custodial.ticket_id), metadata=payment_md
    )
    spent = balance_before - (await chain.get_balance(payer)).lamports
    assert spent == got.nft.cost_lamports + other_nft.nft.cost_lamports

    minted = await outbox_events(postgres_url, nft_app, events_pb2.TicketMinted)
    assert sorted(e.ticket_id for e in minted if e.payment_id == request.payment_id) == sorted(
        r.ticket_id for r in job.results
    )


async def test_same_request_sequentially_mints_once(
    nft_app: App, stub: Any, payment_md: Any
) -> None:
    request = mint_request(count=3)
    first = await stub.MintTickets(request, metadata=payment_md)
    await wait_job(stub, payment_md, first.job.id)
    for _ in range(3):
        again = await stub.MintTickets(request, metadata=payment_md)
        assert again == first  # the stored reply, byte for byte
    # Another key for the same payment (a redelivered event): the same job, nothing re-minted.
    other_key = nft_pb2.MintTicketsRequest()
    other_key.CopyFrom(request)
    other_key.idempotency_key = str(uuid.uuid4())
    replay = await stub.MintTickets(other_key, metadata=payment_md)
    assert replay.job.id == first.job.id
    assert replay.job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    await asyncio.sleep(0.2)  # give any (wrong) extra mint a chance to land
    assert count_ticket_mints(local_chain(nft_app), payer_of(nft_app)) == 3


async def _mint_retrying(stub: Any, request: Any, md: Any) -> nft_pb2.MintTicketsResponse:
    """A client that retries ABORTED (a concurrent duplicate in progress), as clients must."""
    while True:
        try:
            reply: nft_pb2.MintTicketsResponse = await stub.MintTickets(request, metadata=md)
            return reply
        except grpc.aio.AioRpcError as err:
            if err.code() is not grpc.StatusCode.ABORTED:
                raise
            await asyncio.sleep(0.02)


async def test_fifty_concurrent_requests_mint_once(
    nft_app: App, stub: Any, payment_md: Any
) -> None:
    same_key = mint_request(count=4)
    replies = await asyncio.gather(*(_mint_retrying(stub, same_key, payment_md) for _ in range(50)))
    assert len({r.job.id for r in replies}) == 1

    # 50 concurrent deliveries of one payment under 50 different keys.
    payment = mint_request(count=4)
    requests = []
    for _ in range(50):
        copy = nft_pb2.MintTicketsRequest()
        copy.CopyFrom(payment)
        copy.idempotency_key = str(uuid.uuid4())
        requests.append(copy)
    replies = await asyncio.gather(*(_mint_retrying(stub, r, payment_md) for r in requests))
    assert len({r.job.id for r in replies}) == 1

    for job_id in (replies[0].job.id,):
        job = await wait_job(stub, payment_md, job_id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    same = await stub.GetMintJob(
        nft_pb2.GetMintJobRequest(payment_id=same_key.payment_id), metadata=payment_md
    )
    await wait_job(stub, payment_md, same.job.id)
    await asyncio.sleep(0.2)
    assert count_ticket_mints(local_chain(nft_app), payer_of(nft_app)) == 8


async def test_bad_input_is_invalid_argument_and_mints_nothing(
    nft_app: App, stub: Any, payment_md: Any, postgres_url: str
) -> None:
    cases: list[tuple[nft_pb2.MintTicketsRequest, str]] = []
    bad_wallet = mint_request(count=1, owner="not-a-wallet-0OIl")
    cases.append((bad_wallet, "tickets[0].owner_wallet"))
    empty = mint_request(count=1)
    del empty.tickets[:]
    cases.append((empty, "tickets"))
    cases.append((mint_request(count=101), "tickets"))
    missing = mint_request(count=2)
    missing.tickets[1].ClearField("event_starts_at")
    missing.tickets[1].event_name = ""
    missing.payment_id = ""
    cases.append((missing, "tickets[1].event_name"))
    too_long = mint_request(count=1)
    too_long.tickets[0].event_name = "x" * 65
    cases.append((too_long, "tickets[0].event_name"))
    long_name = mint_request(count=2)
    long_name.tickets[1].name = "é" * 16 + "x"  # 16 characters, 33 bytes
    cases.append((long_name, "tickets[1].name"))
    duplicate = mint_request(count=2)
    duplicate.tickets[1].ticket_id = duplicate.tickets[0].ticket_id
    cases.append((duplicate, "tickets[1].ticket_id"))
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.MintTickets(request, metadata=payment_md)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in [f for f, _ in violations(info.value)], violations(info.value)
    missing_fields = [f for f, _ in violations(info.value)]
    del missing_fields

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.MintTickets(missing, metadata=payment_md)
    fields = {f for f, _ in violations(info.value)}
    assert {"payment_id", "tickets[1].event_name", "tickets[1].event_starts_at"} <= fields

    conn = await asyncpg.connect(postgres_url)
    try:
        schema = nft_app.settings.schema_name
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".mint_jobs') == 0
        assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".ticket_nfts') == 0
    finally:
        await conn.close()
    assert count_ticket_mints(local_chain(nft_app), payer_of(nft_app)) == 0


async def test_conflicting_requests_are_refused(nft_app: App, stub: Any, payment_md: Any) -> None:
    request = mint_request(count=1)
    await stub.MintTickets(request, metadata=payment_md)
    # Same payment, other tickets.
    other = mint_request(request.payment_id, count=2)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.MintTickets(other, metadata=payment_md)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(info.value) == "PAYMENT_HAS_OTHER_MINT_JOB"
    # Same ticket id under another payment.
    stolen = mint_request(count=1)
    stolen.tickets[0].ticket_id = request.tickets[0].ticket_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.MintTickets(stolen, metadata=payment_md)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(info.value) == "TICKET_OF_OTHER_PAYMENT"


async def test_only_payment_and_admins_may_mint(
    nft_app: App, stub: nft_pb2_grpc.NftServiceStub, tokens: Any
) -> None:
    buyer = tokens.metadata(tokens.user("buyer-1", ["buyer"], aud=AUD))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.MintTickets(mint_request(count=1), metadata=buyer)
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_insufficient_funds_fails_for_good_then_admin_retry(
    start_nft: Start, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    from meshdev.testing.servers import channel_for

    poor = Keypair()
    # 3,000,000 lamports pay the fee but not the rents.
    app = await start_nft(
        nft_payer_key=json.dumps(list(bytes(poor))),
        solana_dev_airdrop_lamports=3_000_000,
    )
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        request = mint_request(count=2)
        reply = await stub.MintTickets(request, metadata=payment_md)
        job = await wait_job(stub, payment_md, reply.job.id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_FAILED
        for result in job.results:
            assert result.state == nft_pb2.MINT_STATE_FAILED
            assert result.error_code == "insufficient_funds"
            assert result.attempts == 1  # permanent: never retried
        wallet = await stub.GetMintingWallet(nft_pb2.GetMintingWalletRequest(), metadata=admin_md)
        assert wallet.address == str(poor.pubkey()) and wallet.low_balance
        failed = await outbox_events(postgres_url, app, events_pb2.MintFailed)
        assert [(e.payment_id, e.error_code, e.dead_lettered) for e in failed] == [
            (request.payment_id, "insufficient_funds", False)
        ] * 2

        # An operator tops the wallet up and re-sends the payment under a new key.
        await local_chain(app).fund(poor.pubkey(), 10**10)
        retry = nft_pb2.MintTicketsRequest()
        retry.CopyFrom(request)
        retry.idempotency_key = str(uuid.uuid4())
        requeued = await stub.MintTickets(retry, metadata=admin_md)
        assert requeued.job.id == reply.job.id
        job = await wait_job(stub, payment_md, reply.job.id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED, [
            (r.error_code, r.error_message, r.attempts) for r in job.results
        ]
        assert count_ticket_mints(local_chain(app), poor.pubkey()) == 2


async def test_operator_cli_lists_and_requeues_failed_mints(
    start_nft: Start, payment_md: Any, postgres_url: str
) -> None:
    import os
    import sys

    from meshdev.testing.servers import channel_for

    poor = Keypair()
    app = await start_nft(
        nft_payer_key=json.dumps(list(bytes(poor))), solana_dev_airdrop_lamports=3_000_000
    )
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        request = mint_request(count=1)
        reply = await stub.MintTickets(request, metadata=payment_md)
        job = await wait_job(stub, payment_md, reply.job.id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_FAILED

        async def ctl(*args: str) -> str:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "nft_service.mintctl",
                "--schema",
                app.settings.schema_name,
                *args,
                env={**os.environ, "DATABASE_URL": postgres_url},
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await process.communicate()
            assert process.returncode == 0
            return out.decode()

        (line,) = (await ctl("list")).splitlines()
        assert json.loads(line)["error_code"] == "insufficient_funds"
        await local_chain(app).fund(poor.pubkey(), 10**10)
        assert (await ctl("requeue", "--payment", request.payment_id)).strip() == "requeued 1"
        job = await wait_job(stub, payment_md, reply.job.id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
        assert count_ticket_mints(local_chain(app), poor.pubkey()) == 1
