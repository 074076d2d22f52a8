"""The Solana RPC chain through the real `solana` AsyncClient, against a LiteSVM-backed JSON-RPC
server on 127.0.0.1 that injects the faults public endpoints produce (meshdev.standins.solana_rpc).

Every test counts what reached the chain: however the transport misbehaves, one mint per ticket.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from meshdev.embedded import free_port
from meshdev.standins.solana_rpc import LiteSvmRpcServer
from meshdev.testing.servers import channel_for
from meshkit.server import App
from meshkit.settings import SettingsError, load_settings
from nft_service.settings import NftSettings
from tests.nft.integration.support import (
    Start,
    count_ticket_mints,
    mint_request,
    payer_of,
    rpc_settings,
    wait_job,
)
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc


async def _mint(app: App, md: Any, count: int = 1) -> nft_pb2.MintJob:
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        reply = await stub.MintTickets(mint_request(count=count), metadata=md)
        return await wait_job(stub, md, reply.job.id)


async def test_429_and_node_behind_are_retried(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any
) -> None:
    app = await start_nft(**rpc_settings(server))
    server.inject("getLatestBlockhash", "node_behind")
    server.inject("sendTransaction", "http429", times=2)
    server.inject("sendTransaction", "node_behind")
    server.inject("getSignatureStatuses", "http429")
    job = await _mint(app, payment_md, count=2)
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    assert [r.attempts for r in job.results] == [1, 1]  # retried inside one attempt
    assert server.pending_faults() == 0
    assert len(server.landed) == 2
    assert count_ticket_mints(server.svm, payer_of(app)) == 2


async def test_expired_blockhash_is_rebuilt_and_lands_once(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any
) -> None:
    app = await start_nft(**rpc_settings(server))
    server.inject("sendTransaction", "expire_before")
    job = await _mint(app, payment_md)
    (result,) = job.results
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    assert result.attempts == 2  # the first signing expired; re-signed with a fresh blockhash
    assert server.landed == [result.signature]
    assert count_ticket_mints(server.svm, payer_of(app)) == 1


async def test_dropped_transaction_is_rebroadcast(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any
) -> None:
    app = await start_nft(**rpc_settings(server))
    server.inject("sendTransaction", "drop")
    job = await _mint(app, payment_md)
    (result,) = job.results
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    assert result.attempts == 1  # the same signed bytes, sent again
    assert server.calls["sendTransaction"] >= 2
    assert server.landed == [result.signature]


async def test_lost_response_is_found_on_chain(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any
) -> None:
    app = await start_nft(**rpc_settings(server))
    server.inject("sendTransaction", "lose_response")
    job = await _mint(app, payment_md)
    (result,) = job.results
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    assert server.landed == [result.signature]
    assert count_ticket_mints(server.svm, payer_of(app)) == 1


async def test_crash_after_landing_before_record_update(
    start_nft: Start,
    server: LiteSvmRpcServer,
    payment_md: Any,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
) -> None:
    """A real process is killed (SIGKILL) after its mint landed on chain and before it could
    record that; the next process finds the mint on chain and sends nothing."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        "GRPC_PORT": str(port),
        "OPS_PORT": "0",
        "HTTP_PORT": "0",
        "DEV_DIR": str(dev_dir),  # same payer and derivation secret as the next process
        "LOG_LEVEL": "WARNING",
        "NFT_WORKER_POLL_S": "0.05",
        "NFT_WORKER_LEASE_S": "1",
    }
    env.update({k.upper(): str(v) for k, v in rpc_settings(server).items()})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nft_service", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        server.inject("sendTransaction", "hang")  # lands on chain, the answer never comes
        request = mint_request(count=1)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = nft_pb2_grpc.NftServiceStub(channel)
            await stub.MintTickets(request, metadata=payment_md, wait_for_ready=True, timeout=30)
        for _ in range(1000):
            if server.landed:
                break
            await asyncio.sleep(0.01)
        assert len(server.landed) == 1
    finally:
        process.kill()
        await process.wait()

    conn = await asyncpg.connect(postgres_url)
    try:
        row = await conn.fetchrow(f'SELECT mint_state, signature FROM "{schema}".ticket_nfts')
    finally:
        await conn.close()
    assert row["mint_state"] == "SUBMITTED"  # our record was never updated...
    assert row["signature"] == server.landed[0]  # ...but the signature was written first
    sends = server.calls["sendTransaction"]

    second = await start_nft(**rpc_settings(server, db_schema=schema, nft_worker_lease_s=1.0))
    async with channel_for(second) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        lookup = nft_pb2.GetMintJobRequest(payment_id=request.payment_id)
        job_id = (await stub.GetMintJob(lookup, metadata=payment_md)).job.id
        job = await wait_job(stub, payment_md, job_id)
    (result,) = job.results
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    assert result.signature == server.landed[0]
    assert server.calls["sendTransaction"] == sends  # found on chain, nothing sent again
    assert count_ticket_mints(server.svm, payer_of(second)) == 1


async def test_exhausted_retries_dead_letter_then_admin_retry(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any, admin_md: Any
) -> None:
    app = await start_nft(**rpc_settings(server, nft_max_attempts=3))
    server.inject("sendTransaction", "http503", times=1000)
    request = mint_request(count=1)
    async with channel_for(app) as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        reply = await stub.MintTickets(request, metadata=payment_md)
        job = await wait_job(stub, payment_md, reply.job.id)
        (result,) = job.results
        assert result.state == nft_pb2.MINT_STATE_DEAD_LETTERED
        assert result.attempts == 3 and result.error_code == "unavailable"
        assert job.status == nft_pb2.MINT_JOB_STATUS_FAILED
        assert not server.landed

        server.clear_faults()
        retry = nft_pb2.MintTicketsRequest()
        retry.CopyFrom(request)
        retry.idempotency_key = str(uuid.uuid4())
        await stub.MintTickets(retry, metadata=admin_md)
        job = await wait_job(stub, payment_md, reply.job.id)
    assert job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED
    assert len(server.landed) == 1


def test_production_refuses_local_chain_and_loopback_rpc() -> None:
    base = {"database_url": "postgresql://db/x", "redis_url": "redis://r", "app_env": "production"}
    with pytest.raises(SettingsError) as info:
        load_settings(NftSettings, **base)
    text = str(info.value)
    assert "SOLANA_CHAIN=local" in text
    assert "NFT_PAYER_KEY" in text and "NFT_DERIVATION_SECRET" in text
    assert "NFT_METADATA_BASE_URL" in text
    for url in ("http://127.0.0.1:8899", "http://localhost:8899", "http://[::1]:8899"):
        with pytest.raises(SettingsError) as info:
            load_settings(NftSettings, **base, solana_chain="rpc", solana_rpc_url=url)
        assert "SOLANA_RPC_URL points at this machine" in str(info.value)
    ok = NftSettings(
        **base,  # type: ignore[arg-type]
        solana_chain="rpc",
        solana_rpc_url="https://api.devnet.solana.com",
        nft_metadata_base_url="https://tkt.example/m",
    )
    nft_problems = [p for p in ok.production_problems() if "SOLANA" in p or "METADATA" in p]
    assert nft_problems == []
    assert ok.cluster == "devnet"


async def test_two_replicas_share_the_queue_and_mint_once(
    start_nft: Start, server: LiteSvmRpcServer, payment_md: Any
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    shared = rpc_settings(server, db_schema=schema, nft_worker_batch=4, nft_mint_workers=2)
    replicas = [await start_nft(**shared), await start_nft(**shared)]
    requests = [mint_request(count=10) for _ in range(5)]
    async with channel_for(replicas[0]) as a, channel_for(replicas[1]) as b:
        stubs = [nft_pb2_grpc.NftServiceStub(a), nft_pb2_grpc.NftServiceStub(b)]
        replies = await asyncio.gather(
            *(
                stubs[i % 2].MintTickets(request, metadata=payment_md)
                for i, request in enumerate(requests)
            )
        )
        jobs = [await wait_job(stubs[0], payment_md, r.job.id) for r in replies]
    assert all(job.status == nft_pb2.MINT_JOB_STATUS_SUCCEEDED for job in jobs)
    signatures = [r.signature for job in jobs for r in job.results]
    assert sorted(signatures) == sorted(server.landed)  # 50 sends landed, each recorded once
    assert len(set(signatures)) == 50
    assert count_ticket_mints(server.svm, payer_of(replicas[0])) == 50
    per_replica = [
        app.registry.get_sample_value("nft_mint_outcomes_total", {"outcome": "minted"}) or 0
        for app in replicas
    ]
    assert sum(per_replica) == 50 and min(per_replica) > 0, per_replica  # both took work
