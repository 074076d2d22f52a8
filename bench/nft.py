"""Benchmark: ticket NFTs minted per second through gRPC MintTickets vs a raw LiteSVM mint loop.

Same run, same machine, same transaction. The service runs as its own process (the way `make run`
starts it: local chain, embedded Postgres and Redis, the chain persisted to its file) and mints
through everything a real mint goes through: the MintTickets RPC (auth, idempotency, validation,
metadata), the Postgres queue (claim, record-before-send, outcome + outbox event), the chain.
The client queues `JOBS` payments of `TICKETS` tickets and waits (GetMintJob) until all are final;
mints/s = tickets / (first request → last ticket confirmed), "confirmed" being the time the
service recorded the last mint (its `minted_at`, same machine, same clock). The client polls one
job at a time every 50 ms, so it notices the end up to ~50 ms plus a GetMintJob per remaining job
later; that later time is printed too ("client saw"), not used for the ratio.

The raw loop builds and sends the same mint transaction (same builders, same name, symbol and
uri sizes) straight to a LiteSVM in this process, nothing else. The box is small and shared, so
the two are measured alternately (raw, service, raw, service, ...) and the medians compared. The
service's first round is a warm-up, not counted in its rate (its pool's connections prepare
their statements and load their type codecs then); every round counts for the cost.

The service runs with a production-length metadata base URL (`BASE_URL`, 21 characters: the
uri is `<base>/<base58 sha256>`, 65-66 bytes; the documents need not be fetchable here) and
every ticket has a short name of an event code and the seat (`BAND A12-7`, 9-11 bytes), as the
contract suggests.

Cost: the payer's balance (GetMintingWallet) before and after, divided by the tickets minted —
rents of the mint and the holder's token account plus the signature fee — next to the formula
`fixed + per_byte x (name + symbol + uri bytes)` at the rent read from the chain (LiteSVM), a
Metaplex Core asset and a Token Metadata NFT with master edition, each from its account sizes at
the same rent plus its protocol fee.

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
from nft_service.domain.metadata import (
    TicketMetadata,
    canonical,
    metadata_json,
    metadata_uri,
    onchain_metadata,
)
from nft_service.domain.model import TicketSpec
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

JOBS = 40
TICKETS = 25  # per job: 1,000 tickets
CLIENT_CONCURRENCY = 8
RAW_MINTS = 1000
ROUNDS = 5
BASE_URL = "https://tkt.example/m"  # 21 characters; production refuses more than 24
SYMBOL = "TIX"
GOAL_LAMPORTS = 6_000_000
# Account sizes of a Metaplex Token Metadata NFT with master edition (mpl-token-metadata's
# MAX_METADATA_LEN and MAX_MASTER_EDITION_LEN, the SPL mint and token account), and the program's
# protocol fee on Create (developers.metaplex.com/protocol-fees: 0.01 SOL).
METAPLEX_ACCOUNTS = {"mint": 82, "token account": 165, "metadata": 679, "master edition": 282}
METAPLEX_CREATE_FEE = 10_000_000
# A Metaplex Core asset is one account (mpl-core's AssetV1, no plugins): key 1 + owner 32 +
# update authority 33 + name (4 + len) + uri (4 + len) + seq Option<u64> None 1; the asset's
# keypair signs too (2 signatures); protocol fee on Create 0.0015 SOL (same page).
CORE_FIXED = 1 + 32 + 33 + 4 + 4 + 1
CORE_CREATE_FEE = 1_500_000
FINAL = {
    nft_pb2.MINT_JOB_STATUS_SUCCEEDED,
    nft_pb2.MINT_JOB_STATUS_PARTIALLY_FAILED,
    nft_pb2.MINT_JOB_STATUS_FAILED,
}
STARTS = datetime(2026, 5, 1, 20, 0, tzinfo=UTC)


def spec(i: int) -> TicketSpec:
    section, row, seat = "A", str(i % 40), str(i % 30)
    return TicketSpec(
        ticket_id=f"t-{i}",
        owner_wallet="",
        event_name="The Band: Fall Tour",
        venue_name="Grand Hall",
        event_starts_at=STARTS,
        section=section,
        row=row,
        seat=seat,
        ticket_type="General",
        image_url="https://img.example/band.png",
        name=f"BAND {section}{row}-{seat}",
    )


def onchain(i: int, mint: str = "") -> TicketMetadata:
    """What the service writes on the mint of ticket `i` (its uri names its own JSON)."""
    ticket = spec(i)
    document = metadata_json(
        ticket, name=ticket.name, symbol=SYMBOL, event_id="bench-event", mint_address=mint
    )
    uri = metadata_uri(BASE_URL, canonical(document)[0])
    return onchain_metadata(name=ticket.name, symbol=SYMBOL, uri=uri)


def raw_loop(count: int) -> float:
    """Mints per second of the bare transaction on LiteSVM (build + sign + send)."""
    svm = LiteSVM()
    payer = Keypair()
    payer_key = payer.pubkey()
    svm.airdrop(payer_key, 10**13)
    blockhash = svm.latest_blockhash()
    metadatas = [onchain(i) for i in range(count)]
    started = time.perf_counter()
    for metadata in metadatas:
        ixs = mint_instructions(
            payer=payer_key,
            seed=uuid.uuid4().hex,
            holder=Keypair().pubkey(),
            metadata=metadata,
            mint_lamports=svm.minimum_balance_for_rent_exemption(mint_account_len(metadata)),
        )
        result = svm.send_transaction(sign(ixs, payer, blockhash, payer_key))
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
        name=s.name,
    )


async def drive(
    port: int, md: tuple[tuple[str, str], ...], round_no: int
) -> tuple[float, float, int, int, int]:
    """Queue the jobs, wait for them; returns (seconds to the last mint recorded, seconds until
    the client saw every job final, minted, lamports spent, failed)."""
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
        started_wall = time.time()
        job_ids = await asyncio.gather(*(submit(j) for j in range(JOBS)))
        minted = failed = 0
        last_minted = started_wall
        for job_id in job_ids:  # roughly the order the queue serves them
            while True:
                reply = await stub.GetMintJob(nft_pb2.GetMintJobRequest(job_id=job_id), metadata=md)
                if reply.job.status in FINAL:
                    break
                await asyncio.sleep(0.05)
            for result in reply.job.results:
                if result.state == nft_pb2.MINT_STATE_MINTED:
                    minted += 1
                    at = result.minted_at.ToDatetime(tzinfo=UTC).timestamp()
                    last_minted = max(last_minted, at)
                else:
                    failed += 1
        seen = time.perf_counter() - started
        after = (await stub.GetMintingWallet(wallet, metadata=md)).balance_lamports
        return last_minted - started_wall, seen, minted, before - after, failed


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
        "NFT_METADATA_BASE_URL": BASE_URL,
        "NFT_SYMBOL": SYMBOL,
        # The service alone: its relay (TicketMinted → notify) has nobody to deliver to here.
        "RELAY_ENABLED": "false",
    }
    ensure_dev_keys(work / "dev")
    token = TestTokens(work / "dev").user("ops", ["admin"], aud="tickettoken.nft", ttl=3600)
    md = (("authorization", f"Bearer {token}"),)
    print(
        f"metadata base URL {BASE_URL!r} ({len(BASE_URL)} characters; documents not served "
        f"there during the bench), symbol {SYMBOL!r}, names like {spec(377).name!r}",
        flush=True,
    )
    raws = [raw_loop(RAW_MINTS)]
    print(f"raw LiteSVM loop: {raws[-1]:.0f} mints/s", flush=True)
    runs: list[tuple[float, float, int, int, int]] = []
    proc = subprocess.Popen([sys.executable, "-m", "nft_service"], env=env)
    try:
        wait_until(lambda: grpc_ready(port), "nft service", timeout=90)
        for round_no in range(ROUNDS + 1):
            runs.append(asyncio.run(drive(port, md, round_no)))
            elapsed, seen, minted, _, failed = runs[-1]
            print(
                f"service {'round ' + str(round_no) if round_no else 'warm-up'}: "
                f"{minted} minted ({failed} not) in "
                f"{elapsed:.2f}s through MintTickets ({JOBS} jobs x {TICKETS}): "
                f"{minted / elapsed:.0f} mints/s (client saw all final after {seen:.2f}s: "
                f"{minted / seen:.0f}/s)",
                flush=True,
            )
            raws.append(raw_loop(RAW_MINTS))
            print(f"raw LiteSVM loop: {raws[-1]:.0f} mints/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        redis.stop()
        postgres.stop()
    raw = statistics.median(raws)
    mints_per_s = statistics.median(minted / elapsed for elapsed, _, minted, _, _ in runs[1:])
    minted = sum(r[2] for r in runs)
    lamports = sum(r[3] for r in runs) // max(1, minted)
    print_costs(lamports)
    print(
        f"nft: ratio={mints_per_s / raw:.2f} mints_per_s={mints_per_s:.0f} "
        f"raw_per_s={raw:.0f} lamports_per_ticket={lamports}"
    )


def print_costs(lamports: int) -> None:
    """The measured cost per ticket next to the formula and the Metaplex alternatives, all at
    the rent read from the chain (LiteSVM: today's mainnet rent)."""
    svm = LiteSVM()

    def rent(size: int) -> int:
        return int(svm.minimum_balance_for_rent_exemption(size))

    per_byte = rent(1) - rent(0)
    empty = TicketMetadata(name="", symbol="", uri="")
    fixed = rent(mint_account_len(empty)) + rent(TOKEN_ACCOUNT_SPACE) + SIGNATURE_FEE
    typical = onchain(377, "x" * 44)
    text = len(f"{typical.name}{typical.symbol}{typical.uri}".encode())
    size = mint_account_len(typical)
    formula = fixed + per_byte * text
    print(
        f"cost per ticket (measured from the payer's balance): {lamports} lamports; "
        f"goal <= {GOAL_LAMPORTS} ({'met' if lamports <= GOAL_LAMPORTS else 'NOT met'})"
    )
    print(
        f"  new layout: cost = fixed {fixed} + {per_byte} x (name + symbol + uri bytes); "
        f"fixed = mint rent {rent(mint_account_len(empty))} ({mint_account_len(empty)} bytes: "
        f"mint 165 + type 1 + MetadataPointer 68 + PermanentDelegate 36 + TokenMetadata 84) + "
        f"token account rent {rent(TOKEN_ACCOUNT_SPACE)} ({TOKEN_ACCOUNT_SPACE} bytes) + "
        f"{SIGNATURE_FEE} fee"
    )
    print(
        f"  e.g. name {typical.name!r} ({len(typical.name.encode())}) + symbol "
        f"{typical.symbol!r} ({len(typical.symbol)}) + uri ({len(typical.uri)}, e.g. "
        f"{typical.uri}) = {text} bytes: mint account {size} bytes, {formula} lamports; "
        f"the goal allows {(GOAL_LAMPORTS - fixed) // per_byte} bytes of name + symbol + uri; "
        f"a 32-byte name costs {fixed + per_byte * (32 + len(typical.symbol) + 66)}"
    )
    core_size = CORE_FIXED + len(typical.name.encode()) + len(typical.uri)
    core = rent(core_size) + 2 * SIGNATURE_FEE + CORE_CREATE_FEE
    metaplex = sum(rent(n) for n in METAPLEX_ACCOUNTS.values()) + 2 * SIGNATURE_FEE
    token_metadata = metaplex + METAPLEX_CREATE_FEE
    print(
        f"  Metaplex Core asset with the same name and uri: {core} lamports (account "
        f"{core_size} bytes, rent {rent(core_size)}, 2 signatures, {CORE_CREATE_FEE} protocol "
        f"fee); this ticket costs {lamports / core:.0%} of it"
    )
    print(
        f"  Token Metadata NFT with master edition: {token_metadata} lamports (accounts "
        f"{sum(METAPLEX_ACCOUNTS.values())} bytes, rent {metaplex - 2 * SIGNATURE_FEE}, "
        f"2 signatures, {METAPLEX_CREATE_FEE} protocol fee); this ticket costs "
        f"{lamports / token_metadata:.0%} of it"
    )


if __name__ == "__main__":
    main()
