"""The ticket's metadata document against its content address, on request (GetTicketNft and
VerifyOwnership `verify_metadata`), and tickets of the earlier layout (facts as additional fields
on the mint, `<base>/metadata/<sha256 hex>.json` uris) still read, verify, transfer and revoke.

The document is fetched over real HTTP from the service's own metadata routes; a document changed
on the server is altered where it is stored.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import grpc
import pytest
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from meshdev.embedded import free_port
from meshdev.standins.solana_rpc import LiteSvmRpcServer
from meshdev.testing.rpc import reason
from meshdev.testing.servers import channel_for
from meshkit.server import App
from nft_service.adapters.chain.token import decode_mint
from tests.nft.integration.support import (
    LEGACY_FACTS,
    Start,
    count_ticket_mints,
    local_chain,
    mint_legacy_ticket,
    mint_request,
    payer_of,
    rpc_settings,
    schema_execute,
    wait_job,
)
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

MATCHES = nft_pb2.METADATA_CHECK_MATCHES
TAMPERED = nft_pb2.METADATA_CHECK_TAMPERED


async def _minted(stub: Any, md: Any, *, owner: str = "") -> nft_pb2.TicketMintResult:
    reply = await stub.MintTickets(mint_request(count=1, owner=owner), metadata=md)
    job = await wait_job(stub, md, reply.job.id)
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    result: nft_pb2.TicketMintResult = job.results[0]
    return result


async def _get(stub: Any, md: Any, ticket_id: str) -> nft_pb2.GetTicketNftResponse:
    request = nft_pb2.GetTicketNftRequest(
        ticket_id=ticket_id, verify_on_chain=True, verify_metadata=True
    )
    reply: nft_pb2.GetTicketNftResponse = await stub.GetTicketNft(request, metadata=md)
    return reply


async def _verify(stub: Any, md: Any, ticket_id: str, wallet: str) -> Any:
    request = nft_pb2.VerifyOwnershipRequest(
        ticket_id=ticket_id, wallet=wallet, verify_metadata=True
    )
    return await stub.VerifyOwnership(request, metadata=md)


async def _alter_document(postgres_url: str, app: App, uri: str) -> None:
    """Change the document served at `uri` where the service stores it."""
    async with aiohttp.ClientSession() as session, session.get(uri) as resp:
        assert resp.status == 200
        document = json.loads(await resp.read())
    for attribute in document["attributes"]:
        if attribute["trait_type"].lower() == "seat":
            attribute["value"] = "1"  # a better seat
    document["description"] += " Upgraded."
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    await schema_execute(
        postgres_url,
        app,
        "UPDATE nft_metadata SET body = $1 WHERE body <> $1 AND sha = (SELECT metadata_sha "
        "FROM ticket_nfts WHERE metadata_uri = $2)",
        body,
        uri,
    )


async def test_served_document_matches_its_uri_until_changed_on_the_server(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    holder = str(Keypair().pubkey())
    result = await _minted(stub, payment_md, owner=holder)
    address = result.metadata_uri.rsplit("/", 1)[1]

    plain = await stub.GetTicketNft(
        nft_pb2.GetTicketNftRequest(ticket_id=result.ticket_id), metadata=admin_md
    )
    assert not plain.HasField("metadata")  # only when asked for

    got = await _get(stub, admin_md, result.ticket_id)
    check = got.metadata
    assert check.check == MATCHES, check
    assert check.uri == result.metadata_uri == got.nft.metadata_uri
    assert check.expected_address == check.computed_address == address
    answer = await _verify(stub, admin_md, result.ticket_id, holder)
    assert answer.owned and answer.metadata.check == MATCHES

    await _alter_document(postgres_url, nft_app, result.metadata_uri)
    got = await _get(stub, admin_md, result.ticket_id)
    assert got.metadata.check == TAMPERED
    assert got.metadata.expected_address == address != got.metadata.computed_address
    assert got.on_chain.matches_record  # the chain is untouched: only the document changed
    answer = await _verify(stub, admin_md, result.ticket_id, holder)
    assert answer.owned and answer.metadata.check == TAMPERED


async def test_unreachable_metadata_host_is_an_answer_not_an_error(
    start_nft: Start, payment_md: Any, admin_md: Any
) -> None:
    base = f"http://127.0.0.1:{free_port()}/m"  # nothing listens there
    app = await start_nft(nft_metadata_base_url=base)
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        holder = str(Keypair().pubkey())
        result = await _minted(stub, payment_md, owner=holder)
        assert result.metadata_uri.startswith(base + "/")
        got = await _get(stub, admin_md, result.ticket_id)
        assert got.metadata.check == nft_pb2.METADATA_CHECK_UNREACHABLE
        assert got.metadata.expected_address and not got.metadata.computed_address
        assert got.metadata.detail
        answer = await _verify(stub, admin_md, result.ticket_id, holder)
        assert answer.owned and answer.metadata.check == nft_pb2.METADATA_CHECK_UNREACHABLE


async def test_earlier_layout_ticket_reads_verifies_transfers_and_burns(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    seller, buyer = str(Keypair().pubkey()), str(Keypair().pubkey())
    legacy = await mint_legacy_ticket(nft_app, stub, payment_md, postgres_url, owner=seller)
    ticket_id = legacy.ticket_id
    assert legacy.metadata_uri.endswith(".json")

    (account,) = (
        await local_chain(nft_app).get_accounts([Pubkey.from_string(legacy.mint_address)])
    ).accounts
    assert account is not None
    assert decode_mint(bytes(account.data)).fields == dict(LEGACY_FACTS)

    got = await _get(stub, admin_md, ticket_id)
    assert got.nft.metadata_uri == legacy.metadata_uri
    assert got.on_chain.exists and got.on_chain.matches_record
    assert got.metadata.check == MATCHES
    assert got.metadata.expected_address == legacy.metadata_uri.rsplit("/", 1)[1][:-5]  # hex
    assert (await _verify(stub, admin_md, ticket_id, seller)).owned

    moved = await stub.TransferTicket(
        nft_pb2.TransferTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=ticket_id,
            to_wallet=buyer,
            reason=nft_pb2.TRANSFER_REASON_RESALE,
        ),
        metadata=payment_md,
    )
    assert moved.from_wallet == seller and moved.signature
    assert (await _verify(stub, admin_md, ticket_id, seller)).status == (
        nft_pb2.OWNERSHIP_STATUS_NOT_OWNER
    )
    after = await _verify(stub, admin_md, ticket_id, buyer)
    assert after.owned and after.metadata.check == MATCHES

    revoked = await stub.RevokeTicket(
        nft_pb2.RevokeTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=ticket_id,
            reason=nft_pb2.REVOKE_REASON_REFUND,
            method=nft_pb2.REVOCATION_METHOD_BURN,
        ),
        metadata=payment_md,
    )
    assert revoked.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED and revoked.signature
    gone = await _verify(stub, admin_md, ticket_id, buyer)
    assert gone.status == nft_pb2.OWNERSHIP_STATUS_REVOKED
    view = await _get(stub, admin_md, ticket_id)
    assert view.on_chain.supply == 0 and view.on_chain.matches_record
    # A burned mint keeps its metadata: the document is still checked against the uri.
    assert view.metadata.check == MATCHES

    await _alter_document(postgres_url, nft_app, legacy.metadata_uri)
    assert (await _get(stub, admin_md, ticket_id)).metadata.check == TAMPERED
    # The earlier route still serves it; neither route serves what is not a stored document.
    base = f"http://127.0.0.1:{nft_app.http_port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(legacy.metadata_uri) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("application/json")
        unknown = "/metadata/" + "0" * 64 + ".json"
        for path in ("/m/" + "1" * 44, "/m/0OIl", "/m/" + "z" * 60, unknown):
            async with session.get(base + path) as resp:
                assert resp.status == 404, path


async def test_earlier_layout_ticket_freezes(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    legacy = await mint_legacy_ticket(nft_app, stub, payment_md, postgres_url)  # custodial
    frozen = await stub.RevokeTicket(
        nft_pb2.RevokeTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=legacy.ticket_id,
            reason=nft_pb2.REVOKE_REASON_CHARGEBACK,
            method=nft_pb2.REVOCATION_METHOD_FREEZE,
        ),
        metadata=admin_md,
    )
    assert frozen.nft.revocation_method == nft_pb2.REVOCATION_METHOD_FREEZE
    check = await _verify(stub, admin_md, legacy.ticket_id, legacy.owner_wallet)
    assert check.status == nft_pb2.OWNERSHIP_STATUS_REVOKED
    assert check.holder_wallet == legacy.owner_wallet
    view = await _get(stub, admin_md, legacy.ticket_id)
    assert view.on_chain.frozen and view.on_chain.supply == 1 and view.on_chain.matches_record
    assert view.metadata.check == MATCHES
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.TransferTicket(
            nft_pb2.TransferTicketRequest(
                idempotency_key=str(uuid.uuid4()),
                ticket_id=legacy.ticket_id,
                to_wallet=str(Keypair().pubkey()),
                reason=nft_pb2.TRANSFER_REASON_ADMIN,
            ),
            metadata=admin_md,
        )
    assert reason(info.value) == "TICKET_REVOKED"


async def test_without_the_chains_rent_nothing_is_minted_or_estimated(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any, admin_md: Any
) -> None:
    """Rent is read from the chain, never assumed: while it cannot be read, the wallet's cost
    per mint is UNAVAILABLE and the minter sends nothing (it retries later); once it can, the
    ticket is minted at that rent."""
    server.inject("getMinimumBalanceForRentExemption", "http503", times=10_000)
    app = await start_nft(**rpc_settings(server))
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetMintingWallet(nft_pb2.GetMintingWalletRequest(), metadata=admin_md)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        reply = await stub.MintTickets(mint_request(count=1), metadata=payment_md)
        for _ in range(200):
            job = await stub.GetMintJob(
                nft_pb2.GetMintJobRequest(job_id=reply.job.id), metadata=payment_md
            )
            if job.job.results[0].state == nft_pb2.MINT_STATE_RETRYING:
                break
            await asyncio.sleep(0.02)
        (result,) = job.job.results
        assert result.state == nft_pb2.MINT_STATE_RETRYING and result.attempts == 0
        assert not server.landed and server.calls.get("sendTransaction", 0) == 0

        server.clear_faults()
        done = await wait_job(stub, payment_md, reply.job.id)
        assert done.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
        assert count_ticket_mints(server.svm, payer_of(app)) == 1
        got = await stub.GetTicketNft(
            nft_pb2.GetTicketNftRequest(ticket_id=result.ticket_id), metadata=admin_md
        )
        size = got.nft.mint_account_size
        svm = server.svm
        assert got.nft.cost_lamports == (
            svm.minimum_balance_for_rent_exemption(size)
            + svm.minimum_balance_for_rent_exemption(170)
            + 5000
        )
        wallet = await stub.GetMintingWallet(nft_pb2.GetMintingWalletRequest(), metadata=admin_md)
        assert wallet.lamports_per_mint == got.nft.cost_lamports
