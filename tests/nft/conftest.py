"""Fixtures and helpers for the nft tests: the service in-process on port 0 with the local chain
(LiteSVM) persisted to the test's own file, real stubs, and chain-side counters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from nft_service.app import DEFINITION
from nft_service.chain.local import LocalChain
from nft_service.chain.token import TOKEN_2022, decode_mint
from nft_service.core import NftCore
from nft_service.servicer import NftServicer
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

AUD = "tickettoken.nft"
FINAL_JOB = {
    nft_pb2.MINT_JOB_STATUS_SUCCEEDED,
    nft_pb2.MINT_JOB_STATUS_PARTIALLY_FAILED,
    nft_pb2.MINT_JOB_STATUS_FAILED,
}

FAST = {
    "nft_worker_poll_s": 0.05,
    "nft_retry_base_s": 0.02,
    "nft_retry_max_s": 0.2,
    "nft_wallet_check_interval_s": 3600.0,
}


Start = Callable[..., Awaitable[App]]


@pytest.fixture
def start_nft(app_factory: Any, tmp_path: Path) -> Start:
    """`app = await start_nft(**settings)`: the nft service with its own chain file."""

    async def start(**overrides: Any) -> App:
        values: dict[str, Any] = {
            **FAST,
            "solana_local_state_file": tmp_path / "chain.jsonl",
        }
        values.update(overrides)
        app: App = await app_factory(DEFINITION, **values)
        return app

    return start


@pytest.fixture
async def nft_app(start_nft: Start) -> App:
    return await start_nft()


@pytest.fixture
async def stub(nft_app: App) -> AsyncIterator[nft_pb2_grpc.NftServiceStub]:
    async with channel_for(nft_app) as channel:
        yield nft_pb2_grpc.NftServiceStub(channel)


@pytest.fixture
def payment_md(tokens: TestTokens) -> tuple[tuple[str, str], ...]:
    return tokens.metadata(tokens.service("payment", aud=AUD))


@pytest.fixture
def admin_md(tokens: TestTokens) -> tuple[tuple[str, str], ...]:
    return tokens.metadata(tokens.user("admin-1", ["admin"], aud=AUD))


def core_of(app: App) -> NftCore:
    servicer = app.registrations[0].servicer
    assert isinstance(servicer, NftServicer)
    return servicer.core


def local_chain(app: App) -> LocalChain:
    chain = core_of(app).chain
    assert isinstance(chain, LocalChain)
    return chain


def count_ticket_mints(chain: LocalChain | LiteSVM, payer: Pubkey) -> int:
    """Token-2022 mints on chain whose permanent delegate is our payer: every ticket NFT."""
    svm = chain.svm if isinstance(chain, LocalChain) else chain
    count = 0
    for _, account in svm.get_program_accounts(TOKEN_2022):
        data = bytes(account.data)
        if len(data) > 165 and data[165] == 1 and decode_mint(data).permanent_delegate == payer:
            count += 1
    return count


def ticket(
    ticket_id: str, *, owner: str = "", seat: str = "7", event_name: str = "The Band: Fall Tour"
) -> nft_pb2.TicketToMint:
    starts = Timestamp()
    starts.FromDatetime(datetime(2026, 5, 1, 20, 0, tzinfo=UTC))
    return nft_pb2.TicketToMint(
        ticket_id=ticket_id,
        owner_wallet=owner,
        event_name=event_name,
        venue_name="Grand Hall",
        event_starts_at=starts,
        section="A",
        row="12",
        seat=seat,
        ticket_type="VIP",
        image_url="https://img.example/band.png",
        attributes={"Door": "North"},
    )


def mint_request(
    payment_id: str | None = None,
    *,
    count: int = 2,
    owner: str = "",
    key: str | None = None,
    priority: int = 0,
) -> nft_pb2.MintTicketsRequest:
    payment_id = payment_id or f"pay-{uuid.uuid4().hex[:10]}"
    return nft_pb2.MintTicketsRequest(
        idempotency_key=key or str(uuid.uuid4()),
        payment_id=payment_id,
        order_id=f"order-{payment_id}",
        event_id="event-1",
        venue_id="venue-1",
        buyer_id="buyer-1",
        priority=priority,  # type: ignore[arg-type]
        tickets=[ticket(f"{payment_id}-t{i}", owner=owner, seat=str(i)) for i in range(count)],
    )


async def wait_job(
    stub: nft_pb2_grpc.NftServiceStub,
    md: Any,
    job_id: str,
    *,
    timeout: float = 20.0,
) -> nft_pb2.MintJob:
    """Poll GetMintJob until the job reaches a final status."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await stub.GetMintJob(nft_pb2.GetMintJobRequest(job_id=job_id), metadata=md)
        if reply.job.status in FINAL_JOB:
            return reply.job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job not final in {timeout}s: {reply.job}")
        await asyncio.sleep(0.03)


def status_of(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no grpc-status-details-bin in trailers")


def violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    for packed in status_of(err).details:
        if packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            packed.Unpack(bad)
            return [(v.field, v.description) for v in bad.field_violations]
    return []


def reason(err: grpc.aio.AioRpcError) -> str:
    for packed in status_of(err).details:
        if packed.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            packed.Unpack(info)
            return str(info.reason)
    return ""


async def outbox_topics(postgres_url: str, app: App) -> list[tuple[str, str | None]]:
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            f'SELECT topic, key FROM "{app.settings.schema_name}".outbox ORDER BY seq'
        )
    finally:
        await conn.close()
    return [(r["topic"], r["key"]) for r in rows]
