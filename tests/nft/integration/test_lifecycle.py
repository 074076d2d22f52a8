"""After the mint: resale transfer, ownership checks at the gate, revocation after a refund,
reads and lists, the minting wallet, and the local chain surviving a restart."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from solders.keypair import Keypair

from meshdev.testing.rpc import reason, violations
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from tests.nft.integration.support import (
    AUD,
    Start,
    derivation_of,
    local_chain,
    mint_request,
    outbox_envelopes,
    payer_of,
    wait_job,
)
from tickettoken.nft.v1 import events_pb2, nft_pb2, nft_pb2_grpc


async def _minted(stub: Any, md: Any, *, owner: str = "", count: int = 1) -> nft_pb2.MintJob:
    reply = await stub.MintTickets(mint_request(count=count, owner=owner), metadata=md)
    job = await wait_job(stub, md, reply.job.id)
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    return job


async def _verify(stub: Any, md: Any, ticket_id: str, wallet: str) -> Any:
    return await stub.VerifyOwnership(
        nft_pb2.VerifyOwnershipRequest(ticket_id=ticket_id, wallet=wallet), metadata=md
    )


async def test_transfer_verify_revoke_verify(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    seller, buyer = str(Keypair().pubkey()), str(Keypair().pubkey())
    job = await _minted(stub, payment_md, owner=seller)
    ticket_id = job.results[0].ticket_id

    before = await _verify(stub, admin_md, ticket_id, seller)
    assert before.owned and before.status == nft_pb2.OWNERSHIP_STATUS_OWNED
    assert before.holder_wallet == seller
    not_yet = await _verify(stub, admin_md, ticket_id, buyer)
    assert not not_yet.owned and not_yet.status == nft_pb2.OWNERSHIP_STATUS_NOT_OWNER
    assert not_yet.holder_wallet == seller

    transfer = nft_pb2.TransferTicketRequest(
        idempotency_key=str(uuid.uuid4()),
        ticket_id=ticket_id,
        to_wallet=buyer,
        reason=nft_pb2.TRANSFER_REASON_RESALE,
        reference_id="resale-1",
    )
    moved = await stub.TransferTicket(transfer, metadata=payment_md)
    assert moved.from_wallet == seller and moved.nft.owner_wallet == buyer and moved.signature
    assert await stub.TransferTicket(transfer, metadata=payment_md) == moved  # idempotent

    after_seller = await _verify(stub, admin_md, ticket_id, seller)
    assert after_seller.status == nft_pb2.OWNERSHIP_STATUS_NOT_OWNER
    assert after_seller.holder_wallet == buyer
    after_buyer = await _verify(stub, admin_md, ticket_id, buyer)
    assert after_buyer.owned

    revoke = nft_pb2.RevokeTicketRequest(
        idempotency_key=str(uuid.uuid4()),
        ticket_id=ticket_id,
        reason=nft_pb2.REVOKE_REASON_REFUND,
        reference_id="refund-1",
        note="refunded at the box office",
    )
    revoked = await stub.RevokeTicket(revoke, metadata=payment_md)
    assert revoked.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED
    assert revoked.nft.revoke_reason == nft_pb2.REVOKE_REASON_REFUND
    assert revoked.nft.revocation_method == nft_pb2.REVOCATION_METHOD_BURN
    assert revoked.signature
    assert await stub.RevokeTicket(revoke, metadata=payment_md) == revoked

    gone = await _verify(stub, admin_md, ticket_id, buyer)
    assert not gone.owned and gone.status == nft_pb2.OWNERSHIP_STATUS_REVOKED
    view = await stub.GetTicketNft(
        nft_pb2.GetTicketNftRequest(ticket_id=ticket_id, verify_on_chain=True), metadata=admin_md
    )
    assert view.on_chain.supply == 0 and view.on_chain.matches_record

    # A revoked ticket cannot be moved.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.TransferTicket(
            nft_pb2.TransferTicketRequest(
                idempotency_key=str(uuid.uuid4()),
                ticket_id=ticket_id,
                to_wallet=seller,
                reason=nft_pb2.TRANSFER_REASON_ADMIN,
            ),
            metadata=admin_md,
        )
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert reason(info.value) == "TICKET_REVOKED"

    types = [e.event_type for e in await outbox_envelopes(postgres_url, nft_app)]
    assert types.count(events_pb2.TicketTransferred.DESCRIPTOR.full_name) == 1
    assert types.count(events_pb2.TicketRevoked.DESCRIPTOR.full_name) == 1


async def test_freeze_revocation_and_custodial_transfer(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any
) -> None:
    job = await _minted(stub, payment_md)  # custodial for buyer-1
    result = job.results[0]
    assert result.custodial
    derivation = derivation_of(nft_app)
    assert result.owner_wallet == str(derivation.custodial_address("buyer-1"))

    # Withdrawal into another user's custodial wallet (no to_wallet given).
    moved = await stub.TransferTicket(
        nft_pb2.TransferTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=result.ticket_id,
            to_user_id="buyer-2",
            reason=nft_pb2.TRANSFER_REASON_GIFT,
        ),
        metadata=payment_md,
    )
    buyer2 = str(derivation.custodial_address("buyer-2"))
    assert moved.nft.owner_wallet == buyer2 and moved.nft.custodial

    frozen = await stub.RevokeTicket(
        nft_pb2.RevokeTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=result.ticket_id,
            reason=nft_pb2.REVOKE_REASON_CHARGEBACK,
            method=nft_pb2.REVOCATION_METHOD_FREEZE,
        ),
        metadata=admin_md,
    )
    assert frozen.nft.revocation_method == nft_pb2.REVOCATION_METHOD_FREEZE
    check = await _verify(stub, admin_md, result.ticket_id, buyer2)
    assert check.status == nft_pb2.OWNERSHIP_STATUS_REVOKED and check.holder_wallet == buyer2
    view = await stub.GetTicketNft(
        nft_pb2.GetTicketNftRequest(mint_address=result.mint_address, verify_on_chain=True),
        metadata=admin_md,
    )
    assert view.on_chain.frozen and view.on_chain.supply == 1 and view.on_chain.matches_record


async def test_bad_transfer_and_verify_input(stub: Any, payment_md: Any, admin_md: Any) -> None:
    job = await _minted(stub, payment_md)
    ticket_id = job.results[0].ticket_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.TransferTicket(
            nft_pb2.TransferTicketRequest(
                idempotency_key=str(uuid.uuid4()), ticket_id=ticket_id, to_wallet="0OIl"
            ),
            metadata=payment_md,
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {f for f, _ in violations(info.value)} == {"to_wallet", "reason"}
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _verify(stub, admin_md, ticket_id, "not a wallet")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _verify(stub, admin_md, "no-such-ticket", str(Keypair().pubkey()))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reads_lists_and_wallet(
    nft_app: App, stub: Any, payment_md: Any, admin_md: Any, tokens: TestTokens
) -> None:
    owner = str(Keypair().pubkey())
    job = await _minted(stub, payment_md, owner=owner, count=5)
    ids = sorted(r.ticket_id for r in job.results)

    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListTicketNfts(
            nft_pb2.ListTicketNftsRequest(owner_wallet=owner, page_size=2, page_token=token),
            metadata=admin_md,
        )
        seen += [n.ticket_id for n in page.nfts]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    active = await stub.ListTicketNfts(
        nft_pb2.ListTicketNftsRequest(
            payment_id=job.payment_id, statuses=[nft_pb2.TICKET_NFT_STATUS_REVOKED]
        ),
        metadata=admin_md,
    )
    assert list(active.nfts) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListTicketNfts(nft_pb2.ListTicketNftsRequest(), metadata=admin_md)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    # Buyers see only their own tickets.
    mine = tokens.metadata(tokens.user("buyer-1", ["buyer"], aud=AUD))
    theirs = tokens.metadata(tokens.user("buyer-9", ["buyer"], aud=AUD))
    listed = await stub.ListTicketNfts(
        nft_pb2.ListTicketNftsRequest(event_id="event-1"), metadata=mine
    )
    assert set(ids) <= {n.ticket_id for n in listed.nfts}
    listed = await stub.ListTicketNfts(
        nft_pb2.ListTicketNftsRequest(event_id="event-1"), metadata=theirs
    )
    assert list(listed.nfts) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetTicketNft(nft_pb2.GetTicketNftRequest(ticket_id=ids[0]), metadata=theirs)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND

    by_payment = await stub.GetMintJob(
        nft_pb2.GetMintJobRequest(payment_id=job.payment_id), metadata=payment_md
    )
    assert by_payment.job.id == job.id and len(by_payment.job.results) == 5

    wallet = await stub.GetMintingWallet(nft_pb2.GetMintingWalletRequest(), metadata=admin_md)
    assert wallet.cluster == "localnet" and not wallet.low_balance
    assert 5_000_000 < wallet.lamports_per_mint < 10_000_000
    assert wallet.estimated_mints_remaining == wallet.balance_lamports // wallet.lamports_per_mint
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{nft_app.ops_port}/metrics") as resp:
            text = await resp.text()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        assert samples[("nft_minting_wallet_balance_lamports", ())] == wallet.balance_lamports
        assert samples[("nft_minting_wallet_low", ())] == 0
        assert samples[("nft_mint_outcomes_total", (("outcome", "minted"),))] == 5
        missing = f"http://127.0.0.1:{nft_app.http_port}/metadata/{'0' * 64}.json"
        async with session.get(missing) as resp:
            assert resp.status == 404


async def test_local_chain_survives_restart(
    start_nft: Start, payment_md: Any, admin_md: Any
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    # One schema for both: the second process must find the first one's records.
    first = await start_nft(db_schema=schema)
    async with channel_for(first) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        job = await _minted(stub, payment_md, count=2)
    payer = payer_of(first)
    balance = (await local_chain(first).get_balance(payer)).lamports
    await first.stop()

    second = await start_nft(db_schema=schema)
    try:
        async with channel_for(second) as channel:
            stub = nft_pb2_grpc.NftServiceStub(channel)
            for result in job.results:
                view = await stub.GetTicketNft(
                    nft_pb2.GetTicketNftRequest(ticket_id=result.ticket_id, verify_on_chain=True),
                    metadata=admin_md,
                )
                assert view.on_chain.exists and view.on_chain.matches_record
            assert (await local_chain(second).get_balance(payer)).lamports == balance
    finally:
        await second.stop()


async def test_not_yet_minted_ticket(start_nft: Start, payment_md: Any, admin_md: Any) -> None:
    app = await start_nft(nft_mint_workers=0)  # nothing mints: the ticket stays queued
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        reply = await stub.MintTickets(mint_request(count=1), metadata=payment_md)
        result = reply.job.results[0]
        answer = await _verify(stub, admin_md, result.ticket_id, str(Keypair().pubkey()))
        assert answer.status == nft_pb2.OWNERSHIP_STATUS_NOT_MINTED and not answer.owned
        # A transfer waits for the mint (a revocation does not: tests/nft/integration/
        # test_revoke_before_mint.py).
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.TransferTicket(
                nft_pb2.TransferTicketRequest(
                    idempotency_key=str(uuid.uuid4()),
                    ticket_id=result.ticket_id,
                    to_wallet=str(Keypair().pubkey()),
                    reason=nft_pb2.TRANSFER_REASON_GIFT,
                ),
                metadata=payment_md,
            )
        # Retryable (the key is released), not a stored final failure.
        assert info.value.code() is grpc.StatusCode.ABORTED
        assert reason(info.value) == "TICKET_NOT_MINTED_YET"
        view = await stub.GetTicketNft(
            nft_pb2.GetTicketNftRequest(ticket_id=result.ticket_id, verify_on_chain=True),
            metadata=admin_md,
        )
        assert view.nft.status == nft_pb2.TICKET_NFT_STATUS_PENDING
        assert not view.on_chain.exists and view.on_chain.matches_record
