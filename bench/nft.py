"""Benchmark: ticket NFTs minted per second through gRPC MintTickets vs a raw LiteSVM mint loop.

Same run, same machine, same transaction. The service runs as its own process (the way `make run`
starts it: local chain, embedded Postgres and Redis, the chain persisted to its file) and mints
through everything a real mint goes through: the MintTickets RPC (auth, idempotency, validation,
metadata), the Postgres queue (claim, record-before-send, outcome + outbox event), the chain.
The client queues `JOBS` payments of `TICKETS` tickets and waits (GetMintJob) until all are final;
mints/s = tickets / (first request → last ticket confirmed).

The raw loop builds and sends the same mint transaction (same builders, same metadata sizes)
straight to a LiteSVM in this process, nothing else. The box is small and shared, so the two are
measured alternately (raw, service, raw, service, raw) and the medians compared.

Cost: the payer's balance (GetMintingWallet) before and after, divided by the tickets minted —
rents of the mint and the holder's token account plus the signature fee — compared with a
Metaplex NFT with master edition (~0.012 SOL).

Last line: `nft: ratio=<x> mints_per_s=<n> raw_per_s=<n> lamports_per_ticket=<n>`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
from _support import grpc_ready, wait_until
from google.protobuf.timestamp_pb2 import Timestamp
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.transaction_metadata import TransactionMetadata

from meshdev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from meshdev.testing.servers import TestTokens
from meshkit.auth import ensure_dev_keys
from nft_service.adapters.chain.token import (
    SIGNATURE_FEE,
    TOKEN_ACCOUNT_SPACE,
    mint_account_len,
    mint_instructions,
    sign,
)
from nft_service.domain.metadata import TicketMetadata, metadata_uri, onchain_metadata
from nft_service.domain.model import TicketSpec
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

JOBS = 40
TICKETS = 25  # per job: 1,000 tickets
CLIENT_CONCURRENCY = 8
RAW_MINTS = 1000
ROUNDS = 2
METAPLEX_LAMPORTS = 12_000_000  # ~0.012 SOL: mint + metadata + master edition accounts
# Account sizes of a Metaplex Token Metadata NFT with master edition (mpl-token-metadata's
# MAX_METADATA_LEN and MAX_MASTER_EDITION_LEN, the SPL mint and token account), and the program's
# protocol fee on Create (developers.metaplex.com/protocol-fees: 0.01 SOL).
METAPLEX_ACCOUNTS = {"mint": 82, "token account": 165, "metadata": 679, "master edition": 282}
METAPLEX_CREATE_FEE = 10_000_000
FACT_KEYS = ("event", "venue", "date", "section", "row", "seat", "type")
FINAL = {
    nft_pb2.MINT_JOB_STATUS_SUCCEEDED,
    nft_pb2.MINT_JOB_STATUS_PARTIALLY_FAILED,
    nft_pb2.MINT_JOB_STATUS_FAILED,
}
STARTS = datetime(2026, 5, 1, 20, 0, tzinfo=UTC)


def spec(i: int) -> TicketSpec:
    return TicketSpec(
        ticket_id=f"t-{i}",
        owner_wallet="",
        event_name="The Band: Fall Tour",
        venue_name="Grand Hall",
        event_starts_at=STARTS,
        section="A",
        row=str(i % 40),
        seat=str(i % 30),
        ticket_type="General",
        image_url="https://img.example/band.png",
    )


def raw_loop(count: int, base_url: str) -> float:
    """Mints per second of the bare transaction on LiteSVM (build + sign + send)."""
    svm = LiteSVM()
    payer = Keypair()
    svm.airdrop(payer.pubkey(), 10**13)
    blockhash = svm.latest_blockhash()
    uri = metadata_uri(base_url, "0" * 64)
    started = time.perf_counter()
    for i in range(count):
        metadata = onchain_metadata(spec(i), symbol="TIX", uri=uri)
        ixs = mint_instructions(
            payer=payer.pubkey(),
            seed=uuid.uuid4().hex,
            holder=Keypair().pubkey(),
            metadata=metadata,
            mint_lamports=svm.minimum_balance_for_rent_exemption(mint_account_len(metadata)),
        )
        result = svm.send_transaction(sign(ixs, payer, blockhash))
        assert isinstance(result, TransactionMetadata), result
    return count / (time.perf_counter() - started)


def ticket_proto(job: int, i: int) -> nft_pb2.TicketToMint:
    s = spec(i)
    starts = Timestamp()
    starts.FromDatetime(STARTS)
    return nft_pb2.TicketToMint(
        ticket_id=f"bench-{job}-{i}",
        event_name=s.event_name,
        venue_name=s.venue_name,
        event_starts_at=starts,
        section=s.section,
        row=s.row,
        seat=s.seat,
        ticket_type=s.ticket_type,
        image_url=s.image_url,
    )


async def drive(
    port: int, md: tuple[tuple[str, str], ...], round_no: int
) -> tuple[float, int, int, int]:
    """Queue the jobs, wait for them; returns (seconds, minted, lamports spent, failed)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = nft_pb2_grpc.NftServiceStub(channel)
        wallet = nft_pb2.GetMintingWalletRequest()
        before = (await stub.GetMintingWallet(wallet, metadata=md)).balance_lamports
        gate = asyncio.Semaphore(CLIENT_CONCURRENCY)

        async def submit(job: int) -> str:
            request = nft_pb2.MintTicketsRequest(
                idempotency_key=str(uuid.uuid4()),
                payment_id=f"bench-pay-{round_no}-{job}",
                order_id=f"bench-order-{job}",
                event_id="bench-event",
                venue_id="bench-venue",
                buyer_id=f"bench-buyer-{job}",
                tickets=[ticket_proto(round_no * JOBS + job, i) for i in range(TICKETS)],
            )
            async with gate:
                reply = await stub.MintTickets(request, metadata=md, timeout=30)
            return str(reply.job.id)

        started = time.perf_counter()
        job_ids = await asyncio.gather(*(submit(j) for j in range(JOBS)))
        minted = failed = 0
        for job_id in job_ids:  # roughly the order the queue serves them
            while True:
                reply = await stub.GetMintJob(nft_pb2.GetMintJobRequest(job_id=job_id), metadata=md)
                if reply.job.status in FINAL:
                    break
                await asyncio.sleep(0.05)
            for result in reply.job.results:
                if result.state == nft_pb2.MINT_STATE_MINTED:
                    minted += 1
                else:
                    failed += 1
        elapsed = time.perf_counter() - started
        after = (await stub.GetMintingWallet(wallet, metadata=md)).balance_lamports
        return elapsed, minted, before - after, failed


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-nft-"))
    postgres = EmbeddedPostgres(work / "pg", fsync=False)
    redis = EmbeddedRedis(work / "redis")
    port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "APP_ENV": "dev",
        "DATABASE_URL": postgres.start(),
        "REDIS_URL": redis.start(),
        "DEV_DIR": str(work / "dev"),
        "GRPC_PORT": str(port),
        "OPS_PORT": "0",
        "HTTP_PORT": str(http_port),
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
    }
    ensure_dev_keys(work / "dev")
    token = TestTokens(work / "dev").user("ops", ["admin"], aud="tickettoken.nft", ttl=3600)
    md = (("authorization", f"Bearer {token}"),)
    base_url = f"http://127.0.0.1:{http_port}/metadata"
    raws = [raw_loop(RAW_MINTS, base_url)]
    print(f"raw LiteSVM loop: {raws[-1]:.0f} mints/s", flush=True)
    runs: list[tuple[float, int, int, int]] = []
    proc = subprocess.Popen([sys.executable, "-m", "nft_service"], env=env)
    try:
        wait_until(lambda: grpc_ready(port), "nft service", timeout=90)
        for round_no in range(ROUNDS):
            runs.append(asyncio.run(drive(port, md, round_no)))
            elapsed, minted, _, failed = runs[-1]
            print(
                f"service round {round_no + 1}: {minted} minted ({failed} not) in "
                f"{elapsed:.2f}s through MintTickets ({JOBS} jobs x {TICKETS}): "
                f"{minted / elapsed:.0f} mints/s",
                flush=True,
            )
            raws.append(raw_loop(RAW_MINTS, base_url))
            print(f"raw LiteSVM loop: {raws[-1]:.0f} mints/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        redis.stop()
        postgres.stop()
    raw = statistics.median(raws)
    mints_per_s = statistics.median(minted / elapsed for elapsed, minted, _, _ in runs)
    minted = sum(r[1] for r in runs)
    lamports = sum(r[2] for r in runs) // max(1, minted)
    svm = LiteSVM()
    typical = onchain_metadata(spec(0), symbol="TIX", uri=metadata_uri(base_url, "0" * 64))
    mint_rent = svm.minimum_balance_for_rent_exemption(mint_account_len(typical))
    ata_rent = svm.minimum_balance_for_rent_exemption(TOKEN_ACCOUNT_SPACE)
    print(
        f"cost per ticket: {lamports} lamports = mint account rent {mint_rent} "
        f"({mint_account_len(typical)} bytes, metadata + 7 ticket fields on the mint) + token "
        f"account rent {ata_rent} + 5000 fee; {lamports / METAPLEX_LAMPORTS:.0%} of a Metaplex "
        f"master-edition NFT (~{METAPLEX_LAMPORTS} lamports)"
    )

    # The floor of this design, whatever the text: every byte but name/symbol/uri/facts is
    # fixed by the Token-2022 layout (mint + MetadataPointer + PermanentDelegate + TokenMetadata)
    # and the holder's token account.
    def cost(metadata: TicketMetadata) -> int:
        rent = svm.minimum_balance_for_rent_exemption(mint_account_len(metadata))
        return rent + ata_rent + SIGNATURE_FEE

    empty = cost(TicketMetadata(name="", symbol="", uri="", fields=()))
    keys_only = cost(TicketMetadata("", "", "", tuple((k, "") for k in FACT_KEYS)))
    rents = [svm.minimum_balance_for_rent_exemption(n) for n in METAPLEX_ACCOUNTS.values()]
    metaplex = sum(rents) + 2 * SIGNATURE_FEE
    with_fee = metaplex + METAPLEX_CREATE_FEE
    print(
        f"floor of this design: {empty} lamports with empty name/symbol/uri and no facts "
        f"({empty / METAPLEX_LAMPORTS:.1%} of ~{METAPLEX_LAMPORTS}); {keys_only} with only the 7 "
        f"fact keys and empty values ({keys_only / METAPLEX_LAMPORTS:.1%})"
    )
    print(
        f"a Metaplex master-edition NFT at today's rent: {metaplex} lamports (accounts "
        f"{sum(METAPLEX_ACCOUNTS.values())} bytes + 2 signatures), {with_fee} with the 0.01 SOL "
        f"Token Metadata protocol fee; this ticket costs {lamports / metaplex:.0%} / "
        f"{lamports / with_fee:.0%} of those"
    )
    print(
        f"nft: ratio={mints_per_s / raw:.2f} mints_per_s={mints_per_s:.0f} "
        f"raw_per_s={raw:.0f} lamports_per_ticket={lamports}"
    )


if __name__ == "__main__":
    main()
