"""The events the nft service announces are its contract messages (events.proto) in the common
envelope, staged in the outbox with the state change: TicketMinted carrying the buyer's contact
from MintTickets, MintFailed when a mint is dead-lettered, TicketTransferred, TicketRevoked."""

from __future__ import annotations

import uuid
from typing import Any

from solders.keypair import Keypair

from meshdev.standins.solana_rpc import LiteSvmRpcServer
from meshdev.testing.servers import channel_for
from meshkit.events import unpack_event
from meshkit.server import App
from nft_service.usecases.events import event_id
from tests.nft.integration.support import (
    CONTACT,
    Start,
    mint_request,
    outbox_envelopes,
    outbox_events,
    rpc_settings,
    wait_job,
)
from tickettoken.nft.v1 import events_pb2, nft_pb2, nft_pb2_grpc


async def test_ticket_minted_carries_the_buyer_contact(
    nft_app: App, stub: Any, payment_md: Any, postgres_url: str
) -> None:
    holder = str(Keypair().pubkey())
    request = mint_request(count=2, owner=holder, contact=CONTACT)
    reply = await stub.MintTickets(request, metadata=payment_md)
    job = await wait_job(stub, payment_md, reply.job.id)
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED

    envelopes = await outbox_envelopes(postgres_url, nft_app)
    assert [e.event_type for e in envelopes] == ["tickettoken.nft.v1.TicketMinted"] * 2
    by_ticket = {e.aggregate_id: e for e in envelopes}
    for result in job.results:
        envelope = by_ticket[result.ticket_id]
        assert (envelope.producer, envelope.aggregate_type) == ("nft", "ticket")
        assert envelope.schema_version == 1
        assert envelope.event_id == str(event_id("minted", result.ticket_id))  # deterministic
        minted = unpack_event(envelope, events_pb2.TicketMinted)
        assert minted.buyer_contact == CONTACT
        assert (minted.ticket_id, minted.mint_address, minted.signature) == (
            result.ticket_id,
            result.mint_address,
            result.signature,
        )
        assert (minted.owner_wallet, minted.custodial) == (holder, False)
        assert (minted.payment_id, minted.order_id, minted.buyer_id) == (
            request.payment_id,
            request.order_id,
            request.buyer_id,
        )
        assert minted.event_name == "The Band: Fall Tour" and minted.seat in {"0", "1"}
        assert minted.metadata_uri == result.metadata_uri
        assert minted.cluster == "localnet"
        assert minted.minted_at == result.minted_at

    # Without a contact in the request, the event says so (an empty ContactInfo).
    bare = await stub.MintTickets(mint_request(count=1), metadata=payment_md)
    (result,) = (await wait_job(stub, payment_md, bare.job.id)).results
    (minted,) = [
        e
        for e in await outbox_events(postgres_url, nft_app, events_pb2.TicketMinted)
        if e.ticket_id == result.ticket_id
    ]
    assert not minted.HasField("buyer_contact") or minted.buyer_contact.email == ""


async def test_mint_failed_when_dead_lettered(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any, postgres_url: str
) -> None:
    app = await start_nft(**rpc_settings(server, nft_max_attempts=2))
    server.inject("sendTransaction", "http503", times=1000)
    request = mint_request(count=1, contact=CONTACT)
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        reply = await stub.MintTickets(request, metadata=payment_md)
        (result,) = (await wait_job(stub, payment_md, reply.job.id)).results
    assert result.state == nft_pb2.MINT_STATE_DEAD_LETTERED
    (failed,) = await outbox_events(postgres_url, app, events_pb2.MintFailed)
    assert failed.dead_lettered and failed.attempts == 2
    assert (failed.ticket_id, failed.payment_id, failed.error_code) == (
        result.ticket_id,
        request.payment_id,
        "unavailable",
    )
    assert failed.buyer_contact == CONTACT
    assert await outbox_events(postgres_url, app, events_pb2.TicketMinted) == []


async def test_transfer_and_revoke_are_announced(
    nft_app: App, stub: Any, payment_md: Any, postgres_url: str
) -> None:
    seller, buyer = str(Keypair().pubkey()), str(Keypair().pubkey())
    reply = await stub.MintTickets(mint_request(count=1, owner=seller), metadata=payment_md)
    (result,) = (await wait_job(stub, payment_md, reply.job.id)).results
    moved = await stub.TransferTicket(
        nft_pb2.TransferTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=result.ticket_id,
            to_wallet=buyer,
            reason=nft_pb2.TRANSFER_REASON_RESALE,
            reference_id="resale-7",
        ),
        metadata=payment_md,
    )
    # To the wallet that already holds it: nothing moves, nothing is announced.
    same = await stub.TransferTicket(
        nft_pb2.TransferTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=result.ticket_id,
            to_wallet=buyer,
            reason=nft_pb2.TRANSFER_REASON_RESALE,
        ),
        metadata=payment_md,
    )
    assert same.signature == "" and same.nft.owner_wallet == buyer
    revoked = await stub.RevokeTicket(
        nft_pb2.RevokeTicketRequest(
            idempotency_key=str(uuid.uuid4()),
            ticket_id=result.ticket_id,
            reason=nft_pb2.REVOKE_REASON_REFUND,
            method=nft_pb2.REVOCATION_METHOD_FREEZE,
            reference_id="refund-7",
        ),
        metadata=payment_md,
    )

    (transferred,) = await outbox_events(postgres_url, nft_app, events_pb2.TicketTransferred)
    assert (transferred.ticket_id, transferred.mint_address) == (
        result.ticket_id,
        result.mint_address,
    )
    assert (transferred.from_wallet, transferred.to_wallet) == (seller, buyer)
    assert transferred.reason == nft_pb2.TRANSFER_REASON_RESALE
    assert transferred.reference_id == "resale-7"
    assert transferred.signature == moved.signature and transferred.to_user_id == ""

    (gone,) = await outbox_events(postgres_url, nft_app, events_pb2.TicketRevoked)
    assert (gone.ticket_id, gone.mint_address, gone.payment_id, gone.buyer_id) == (
        result.ticket_id,
        result.mint_address,
        revoked.nft.payment_id,
        "buyer-1",
    )
    assert gone.reason == nft_pb2.REVOKE_REASON_REFUND
    assert gone.method == nft_pb2.REVOCATION_METHOD_FREEZE
    assert gone.reference_id == "refund-7" and gone.signature == revoked.signature
    assert gone.revoked_at == revoked.nft.revoked_at
    envelope = (await outbox_envelopes(postgres_url, nft_app))[-1]
    assert envelope.event_id == str(event_id("revoked", result.ticket_id))
