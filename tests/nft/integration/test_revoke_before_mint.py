"""RevokeTicket before the ticket is minted (a refund that overtakes its mint), on the real chain
programs (LiteSVM, in-process or behind the Solana RPC stand-in):

* never sent → revoked at once with nothing minted (CANCELLED), one TicketRevoked;
* sent, its mint in flight → answered with `revocation_pending`; once the mint lands it is
  burned right after: TicketMinted, then TicketRevoked, one burn on chain;
* the mint dead-lettered (before or after the revocation) → the revocation completes with
  nothing on chain, the buyer is not told the ticket is delayed;
* a ticket id nft never heard of → NOT_FOUND with a retry hint, and the same request (same
  idempotency key) revokes it once MintTickets has arrived;
* duplicate requests: the same key replays its answer, another key answers the ticket as it
  stands, the first request's reason and method stand;
* processes killed (SIGKILL) between the revocation being accepted and the minter applying it,
  and between the burn landing and its record: still exactly one mint and one burn.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from solders.pubkey import Pubkey

from meshdev.embedded import free_port
from meshdev.standins.solana_rpc import LiteSvmRpcServer
from meshdev.testing.rpc import reason
from meshdev.testing.servers import channel_for
from meshkit.server import App
from nft_service.adapters.chain.token import decode_mint
from tests.nft.integration.support import (
    CONTACT,
    Start,
    count_ticket_mints,
    local_chain,
    mint_request,
    outbox_events,
    payer_of,
    rpc_settings,
    wait_job,
)
from tickettoken.nft.v1 import events_pb2, nft_pb2, nft_pb2_grpc

Stub = nft_pb2_grpc.NftServiceStub


async def _revoke(
    stub: Stub,
    md: Any,
    ticket_id: str,
    *,
    key: str | None = None,
    why: int = nft_pb2.REVOKE_REASON_REFUND,
    method: int = nft_pb2.REVOCATION_METHOD_UNSPECIFIED,
    reference: str = "refund-1",
) -> nft_pb2.RevokeTicketResponse:
    reply: nft_pb2.RevokeTicketResponse = await stub.RevokeTicket(
        nft_pb2.RevokeTicketRequest(
            idempotency_key=key or str(uuid.uuid4()),
            ticket_id=ticket_id,
            reason=why,  # type: ignore[arg-type]
            method=method,  # type: ignore[arg-type]
            reference_id=reference,
            note="refunded",
        ),
        metadata=md,
    )
    return reply


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    """Wait (bounded) until `check()` holds: convergence, not timing, is what is asserted."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


async def _ticket(stub: Stub, md: Any, ticket_id: str) -> nft_pb2.GetTicketNftResponse:
    reply: nft_pb2.GetTicketNftResponse = await stub.GetTicketNft(
        nft_pb2.GetTicketNftRequest(ticket_id=ticket_id, verify_on_chain=True), metadata=md
    )
    return reply


async def _revoked(stub: Stub, md: Any, ticket_id: str) -> nft_pb2.GetTicketNftResponse:
    """The ticket once it is REVOKED (waiting for the minters to apply its revocation)."""
    seen: list[nft_pb2.GetTicketNftResponse] = []

    async def done() -> bool:
        seen.append(await _ticket(stub, md, ticket_id))
        return seen[-1].nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED

    await _until(done, f"{ticket_id} revoked")
    return seen[-1]


def _sample(app: App, name: str, **labels: str) -> float:
    value = app.registry.get_sample_value(name, labels)
    return value if value is not None else 0.0


async def test_revoked_before_it_was_sent_is_never_minted(
    start_nft: Start, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    first = await start_nft(db_schema=schema, nft_mint_workers=0)  # nothing mints yet
    async with channel_for(first) as channel:
        stub = Stub(channel)
        request = mint_request(count=2, contact=CONTACT)
        reply = await stub.MintTickets(request, metadata=payment_md)
        gone, kept = reply.job.results
        key = str(uuid.uuid4())
        revoked = await _revoke(stub, payment_md, gone.ticket_id, key=key, reference="refund-7")
        # Answered at once: revoked, with nothing sent and nothing pending.
        assert revoked.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED
        assert not revoked.nft.revocation_pending and revoked.signature == ""
        assert revoked.nft.revoke_reason == nft_pb2.REVOKE_REASON_REFUND
        assert revoked.nft.revocation_method == nft_pb2.REVOCATION_METHOD_BURN  # the default
        assert revoked.nft.mint_signature == "" and not revoked.nft.HasField("minted_at")
        # The same key replays the answer; another key gets the ticket as it stands, with the
        # first request's reason.
        replay = await _revoke(stub, payment_md, gone.ticket_id, key=key, reference="refund-7")
        assert replay == revoked
        again = await _revoke(stub, admin_md, gone.ticket_id, why=nft_pb2.REVOKE_REASON_FRAUD)
        assert again.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED
        assert again.nft.revoke_reason == nft_pb2.REVOKE_REASON_REFUND
        job = await stub.GetMintJob(
            nft_pb2.GetMintJobRequest(job_id=reply.job.id), metadata=admin_md
        )
        assert [r.state for r in job.job.results] == [
            nft_pb2.MINT_STATE_CANCELLED,
            nft_pb2.MINT_STATE_QUEUED,
        ]
        assert _sample(first, "nft_revocations_total", outcome="never_minted") == 1

        # A job whose every ticket is revoked before its mint is CANCELLED.
        alone = await stub.MintTickets(mint_request(count=1), metadata=payment_md)
        await _revoke(stub, payment_md, alone.job.results[0].ticket_id)
        cancelled = await stub.GetMintJob(
            nft_pb2.GetMintJobRequest(job_id=alone.job.id), metadata=admin_md
        )
        assert cancelled.job.status == nft_pb2.MINT_JOB_STATUS_CANCELLED
        assert cancelled.job.HasField("completed_at")
    await first.stop()

    # Minters start (another process over the same database and chain): only the other
    # ticket is minted; the revoked one never reaches the chain.
    second = await start_nft(db_schema=schema)
    async with channel_for(second) as channel:
        stub = Stub(channel)
        job = await wait_job(stub, payment_md, reply.job.id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
        assert [r.state for r in job.results] == [
            nft_pb2.MINT_STATE_CANCELLED,
            nft_pb2.MINT_STATE_MINTED,
        ]
        chain = local_chain(second)
        assert count_ticket_mints(chain, payer_of(second)) == 1
        (account,) = (await chain.get_accounts([Pubkey.from_string(gone.mint_address)])).accounts
        assert account is None
        view = await _ticket(stub, admin_md, gone.ticket_id)
        assert view.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED
        assert not view.on_chain.exists and view.on_chain.matches_record
        gate = await stub.VerifyOwnership(
            nft_pb2.VerifyOwnershipRequest(ticket_id=gone.ticket_id, wallet=gone.owner_wallet),
            metadata=admin_md,
        )
        assert gate.status == nft_pb2.OWNERSHIP_STATUS_REVOKED and not gate.owned
        # A redelivered MintTickets (or an operator's retry) does not bring it back.
        redelivered = nft_pb2.MintTicketsRequest()
        redelivered.CopyFrom(request)
        redelivered.idempotency_key = str(uuid.uuid4())
        again_job = await stub.MintTickets(redelivered, metadata=payment_md)
        assert again_job.job.results[0].state == nft_pb2.MINT_STATE_CANCELLED

    revocations = await outbox_events(postgres_url, second, events_pb2.TicketRevoked)
    mine = [e for e in revocations if e.ticket_id == gone.ticket_id]
    assert len(mine) == 1
    (event,) = mine
    assert event.never_minted and event.signature == ""
    assert (event.mint_address, event.payment_id) == (gone.mint_address, request.payment_id)
    assert event.reason == nft_pb2.REVOKE_REASON_REFUND and event.reference_id == "refund-7"
    minted = await outbox_events(postgres_url, second, events_pb2.TicketMinted)
    assert [e.ticket_id for e in minted] == [kept.ticket_id]
    assert await outbox_events(postgres_url, second, events_pb2.MintFailed) == []


async def test_revoked_while_its_mint_is_in_flight_is_burned_right_after(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    app = await start_nft(**rpc_settings(server, nft_max_attempts=1000))
    # Every send is dropped on the way (the cluster never sees it) until the faults are cleared:
    # the mint is sent, again and again, and has not landed.
    server.inject("sendTransaction", "drop", times=100_000)
    async with channel_for(app) as channel:
        stub = Stub(channel)
        request = mint_request(count=1, contact=CONTACT)
        reply = await stub.MintTickets(request, metadata=payment_md)
        (queued,) = reply.job.results

        async def sent() -> bool:
            return server.calls["sendTransaction"] > 0

        await _until(sent, "the mint sent")
        key = str(uuid.uuid4())
        pending = await _revoke(
            stub, payment_md, queued.ticket_id, key=key, method=nft_pb2.REVOCATION_METHOD_BURN
        )
        assert pending.nft.revocation_pending and pending.signature == ""
        assert pending.nft.status == nft_pb2.TICKET_NFT_STATUS_PENDING
        assert pending.nft.revoke_reason == nft_pb2.REVOKE_REASON_REFUND
        burn = nft_pb2.REVOCATION_METHOD_BURN
        assert await _revoke(stub, payment_md, queued.ticket_id, key=key, method=burn) == pending
        other = await _revoke(
            stub,
            admin_md,
            queued.ticket_id,
            why=nft_pb2.REVOKE_REASON_FRAUD,
            method=nft_pb2.REVOCATION_METHOD_FREEZE,
        )
        assert other.nft.revocation_pending
        assert other.nft.revoke_reason == nft_pb2.REVOKE_REASON_REFUND  # the first one stands
        assert other.nft.revocation_method == nft_pb2.REVOCATION_METHOD_BURN
        # A ticket being revoked cannot be moved.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.TransferTicket(
                nft_pb2.TransferTicketRequest(
                    idempotency_key=str(uuid.uuid4()),
                    ticket_id=queued.ticket_id,
                    to_user_id="buyer-2",
                    reason=nft_pb2.TRANSFER_REASON_GIFT,
                ),
                metadata=admin_md,
            )
        assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert reason(info.value) == "TICKET_REVOCATION_PENDING"

        server.clear_faults()  # the next re-broadcast lands
        view = await _revoked(stub, admin_md, queued.ticket_id)
        assert not view.nft.revocation_pending and view.nft.mint_signature
        assert view.on_chain.exists and view.on_chain.supply == 0 and view.on_chain.matches_record
        job = await wait_job(stub, payment_md, reply.job.id)
        assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
        # The same key still replays its first answer; a new key sees the revocation done.
        assert await _revoke(stub, payment_md, queued.ticket_id, key=key, method=burn) == pending
        done = await _revoke(stub, payment_md, queued.ticket_id)
        assert done.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED and done.signature

    # On chain: one mint, then one burn.
    assert len(server.landed) == 2
    assert server.landed[0] == view.nft.mint_signature and server.landed[1] == done.signature
    mint = server.svm.get_account(Pubkey.from_string(view.nft.mint_address))
    assert mint is not None and decode_mint(bytes(mint.data)).supply == 0
    assert count_ticket_mints(server.svm, payer_of(app)) == 1
    minted = await outbox_events(postgres_url, app, events_pb2.TicketMinted)
    assert [e.ticket_id for e in minted] == [queued.ticket_id]
    (revoked,) = await outbox_events(postgres_url, app, events_pb2.TicketRevoked)
    assert revoked.ticket_id == queued.ticket_id and not revoked.never_minted
    assert revoked.signature == done.signature
    assert revoked.method == nft_pb2.REVOCATION_METHOD_BURN
    assert _sample(app, "nft_revocations_total", outcome="after_mint") == 1
    assert _sample(app, "nft_revocations_total", outcome="revoked") == 1


async def test_unknown_ticket_is_not_found_until_its_mint_is_queued(
    start_nft: Start, payment_md: Any
) -> None:
    app = await start_nft(nft_mint_workers=0)
    async with channel_for(app) as channel:
        stub = Stub(channel)
        request = mint_request(count=1)
        ticket_id = request.tickets[0].ticket_id
        key = str(uuid.uuid4())  # the relay's key, derived from the refund event: never changes
        for _ in range(2):  # retried while the payment's MintTickets has not arrived
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _revoke(stub, payment_md, ticket_id, key=key)
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert reason(info.value) == "TICKET_NOT_FOUND"
        await stub.MintTickets(request, metadata=payment_md)
        revoked = await _revoke(stub, payment_md, ticket_id, key=key)
        assert revoked.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED
        assert await _revoke(stub, payment_md, ticket_id, key=key) == revoked


async def test_dead_lettered_mint_counts_alerts_and_its_revocation_completes(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    app = await start_nft(
        **rpc_settings(server, nft_max_attempts=2, nft_wallet_check_interval_s=0.05)
    )
    server.inject("sendTransaction", "http503", times=100_000)
    async with channel_for(app) as channel:
        stub = Stub(channel)
        request = mint_request(count=1, contact=CONTACT)
        reply = await stub.MintTickets(request, metadata=payment_md)
        (result,) = (await wait_job(stub, payment_md, reply.job.id)).results
        assert result.state == nft_pb2.MINT_STATE_DEAD_LETTERED

        # The operator alert, and what the buyer's "ticket delayed" message needs.
        assert _sample(app, "nft_mint_dead_lettered_total", state="dead_lettered") == 1
        assert _sample(app, "nft_mint_dead_lettered_total", state="failed") == 0

        async def gauge_is(value: float) -> bool:
            return _sample(app, "nft_mint_dead_lettered_tickets", state="dead_lettered") == value

        await _until(lambda: gauge_is(1), "the dead-letter gauge at 1")
        (failed,) = await outbox_events(postgres_url, app, events_pb2.MintFailed)
        assert failed.dead_lettered and failed.buyer_contact == CONTACT
        assert (failed.ticket_id, failed.event_name, failed.venue_name) == (
            result.ticket_id,
            "The Band: Fall Tour",
            "Grand Hall",
        )
        assert (failed.section, failed.row, failed.seat, failed.ticket_type) == (
            "A",
            "12",
            "0",
            "VIP",
        )
        assert failed.event_starts_at == request.tickets[0].event_starts_at

        # The refund arrives: nothing is on chain, so the ticket is revoked with nothing minted.
        revoked = await _revoke(stub, payment_md, result.ticket_id)
        assert revoked.nft.status == nft_pb2.TICKET_NFT_STATUS_REVOKED and revoked.signature == ""
        job = await stub.GetMintJob(
            nft_pb2.GetMintJobRequest(job_id=reply.job.id), metadata=admin_md
        )
        assert job.job.results[0].state == nft_pb2.MINT_STATE_CANCELLED
        assert job.job.status == nft_pb2.MINT_JOB_STATUS_CANCELLED
        await _until(lambda: gauge_is(0), "the dead-letter gauge back at 0")
        # An operator's retry does not bring it back.
        server.clear_faults()
        retry = nft_pb2.MintTicketsRequest()
        retry.CopyFrom(request)
        retry.idempotency_key = str(uuid.uuid4())
        requeued = await stub.MintTickets(retry, metadata=admin_md)
        assert requeued.job.results[0].state == nft_pb2.MINT_STATE_CANCELLED
    assert not server.landed
    (event,) = await outbox_events(postgres_url, app, events_pb2.TicketRevoked)
    assert event.never_minted and event.ticket_id == result.ticket_id
    assert len(await outbox_events(postgres_url, app, events_pb2.MintFailed)) == 1


async def test_revocation_pending_when_the_mint_dead_letters_completes_unminted(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any, admin_md: Any, postgres_url: str
) -> None:
    app = await start_nft(**rpc_settings(server, nft_max_attempts=3))
    server.inject("sendTransaction", "drop", times=100_000)  # sent, never lands
    async with channel_for(app) as channel:
        stub = Stub(channel)
        reply = await stub.MintTickets(mint_request(count=1, contact=CONTACT), metadata=payment_md)
        (queued,) = reply.job.results

        async def sent() -> bool:
            return server.calls["sendTransaction"] > 0

        await _until(sent, "the mint sent")
        pending = await _revoke(stub, payment_md, queued.ticket_id)
        assert pending.nft.revocation_pending
        view = await _revoked(stub, admin_md, queued.ticket_id)  # after the attempts run out
        assert not view.on_chain.exists and view.on_chain.matches_record
        job = await stub.GetMintJob(
            nft_pb2.GetMintJobRequest(job_id=reply.job.id), metadata=admin_md
        )
        assert job.job.results[0].state == nft_pb2.MINT_STATE_CANCELLED
    assert not server.landed
    # The buyer is refunded, not told the ticket is delayed; no operator alert.
    assert await outbox_events(postgres_url, app, events_pb2.MintFailed) == []
    assert _sample(app, "nft_mint_dead_lettered_total", state="dead_lettered") == 0
    (event,) = await outbox_events(postgres_url, app, events_pb2.TicketRevoked)
    assert event.never_minted


def _process_env(
    server: LiteSvmRpcServer,
    *,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    schema: str,
    port: int,
) -> dict[str, str]:
    """One nft process with a single minter whose chain calls wait (a hung answer) for long:
    the state it leaves when killed is the state the test set up."""
    settings = rpc_settings(server, solana_rpc_timeout_s=120.0)
    policies = json.loads(settings.pop("provider_policies"))
    policies["solana"]["attempt_timeout_s"] = 120.0
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        "GRPC_PORT": str(port),
        "OPS_PORT": "0",
        "HTTP_PORT": "0",
        "DEV_DIR": str(dev_dir),  # same payer and derivation secret in every process
        "LOG_LEVEL": "WARNING",
        "NFT_WORKER_POLL_S": "0.05",
        "NFT_WORKER_LEASE_S": "1",
        "NFT_MINT_WORKERS": "1",
        "PROVIDER_POLICIES": json.dumps(policies),
    }
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


async def _operations(postgres_url: str, schema: str, ticket_id: str) -> list[str]:
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            f'SELECT kind FROM "{schema}".ticket_operations WHERE ticket_id = $1', ticket_id
        )
    finally:
        await conn.close()
    return [r["kind"] for r in rows]


async def test_killed_between_accepting_and_applying_still_revokes_once(
    start_nft: Start,
    server: LiteSvmRpcServer,
    payment_md: Any,
    admin_md: Any,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
) -> None:
    """1st process: its mint lands but the answer never comes (the worker hangs), the refund's
    revocation is accepted (pending), SIGKILL. 2nd process: finds the mint on chain (records
    TicketMinted), sends the burn, which lands while the answer hangs again, SIGKILL. 3rd: reads
    the chain, finds the token burned and only records it. One mint, one burn, one TicketRevoked.
    """
    schema = f"t_{uuid.uuid4().hex[:12]}"
    request = mint_request(count=1, contact=CONTACT)
    ticket_id = request.tickets[0].ticket_id

    async def landed(count: int) -> bool:
        return len(server.landed) >= count

    async def run_until_killed(inject: str, phase: Callable[[Stub], Awaitable[None]]) -> None:
        port = free_port()
        env = _process_env(
            server,
            postgres_url=postgres_url,
            redis_url=redis_url,
            dev_dir=dev_dir,
            schema=schema,
            port=port,
        )
        server.inject("sendTransaction", inject)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "nft_service", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await phase(Stub(channel))
        finally:
            process.kill()  # SIGKILL: no shutdown, no lease given back
            await process.wait()

    async def first(stub: Stub) -> None:
        await stub.MintTickets(request, metadata=payment_md, wait_for_ready=True, timeout=30)
        await _until(lambda: landed(1), "the mint landed")
        pending = await _revoke(stub, payment_md, ticket_id)
        assert pending.nft.revocation_pending  # the worker is stuck: its mint is in flight

    async def second(stub: Stub) -> None:
        await stub.GetMintJob(
            nft_pb2.GetMintJobRequest(payment_id=request.payment_id),
            metadata=payment_md,
            wait_for_ready=True,
            timeout=30,
        )
        await _until(lambda: landed(2), "the burn landed")

    await run_until_killed("hang", first)
    sends_after_first = server.calls["sendTransaction"]
    await run_until_killed("hang", second)
    assert server.calls["sendTransaction"] == sends_after_first + 1  # found the mint; one burn
    burn = server.landed[1]
    sends = server.calls["sendTransaction"]

    third = await start_nft(**rpc_settings(server, db_schema=schema, nft_worker_lease_s=1.0))
    async with channel_for(third) as channel:
        stub = Stub(channel)
        view = await _revoked(stub, admin_md, ticket_id)
    assert view.on_chain.exists and view.on_chain.supply == 0 and view.on_chain.matches_record
    assert server.calls["sendTransaction"] == sends  # the burn was found on chain: none sent
    assert len(server.landed) == 2 and server.landed[1] == burn
    assert count_ticket_mints(server.svm, payer_of(third)) == 1
    minted = await outbox_events(postgres_url, third, events_pb2.TicketMinted)
    assert [e.ticket_id for e in minted] == [ticket_id]
    (revoked,) = await outbox_events(postgres_url, third, events_pb2.TicketRevoked)
    assert revoked.ticket_id == ticket_id and not revoked.never_minted
    assert await _operations(postgres_url, schema, ticket_id) == ["REVOKE"]
