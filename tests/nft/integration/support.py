"""Helpers for the nft integration tests: requests, waiting for jobs, reading errors, the events
in the outbox, and what is on chain."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey

from meshdev.standins.solana_rpc import LiteSvmRpcServer
from meshkit.server import App
from nft_service.adapters.chain import TxStatus
from nft_service.adapters.chain.local import LocalChain
from nft_service.adapters.chain.token import (
    MINT_FUNDING,
    SIGNATURE_FEE,
    TOKEN_2022,
    TOKEN_ACCOUNT_SPACE,
    decode_mint,
    mint_account_len,
    mint_address,
    mint_instructions,
    sign,
)
from nft_service.adapters.keys import Derivation, load_derivation_secret, load_payer
from nft_service.api.servicer import NftServicer
from nft_service.domain.metadata import TicketMetadata, canonical, legacy_metadata_uri
from nft_service.settings import NftSettings
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

AUD = "tickettoken.nft"
FINAL_JOB = {
    nft_pb2.MINT_JOB_STATUS_SUCCEEDED,
    nft_pb2.MINT_JOB_STATUS_PARTIALLY_FAILED,
    nft_pb2.MINT_JOB_STATUS_FAILED,
    nft_pb2.MINT_JOB_STATUS_CANCELLED,
}
E = TypeVar("E", bound=Message)
Start = Callable[..., Awaitable[App]]
"""The `start_nft` fixture: `app = await start_nft(**settings)`."""


def _settings(app: App) -> NftSettings:
    assert isinstance(app.settings, NftSettings)
    return app.settings


def servicer_of(app: App) -> NftServicer:
    servicer = app.registrations[0].servicer
    assert isinstance(servicer, NftServicer)
    return servicer


def payer_of(app: App) -> Pubkey:
    """The app's payer, read from its settings the way the app does."""
    return load_payer(_settings(app)).pubkey()


def derivation_of(app: App) -> Derivation:
    return Derivation(load_derivation_secret(_settings(app)))


def local_chain(app: App) -> LocalChain:
    chain = servicer_of(app).tickets.onchain.chain
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
    starts = datetime(2026, 5, 1, 20, 0, tzinfo=UTC)
    message = nft_pb2.TicketToMint(
        ticket_id=ticket_id,
        owner_wallet=owner,
        event_name=event_name,
        venue_name="Grand Hall",
        section="A",
        row="12",
        seat=seat,
        ticket_type="VIP",
        image_url="https://img.example/band.png",
        attributes={"Door": "North"},
    )
    message.event_starts_at.FromDatetime(starts)
    return message


CONTACT = common_pb2.ContactInfo(
    name="Ada Lovelace", email="ada@example.com", phone="+16155550100", locale="en-US"
)


def mint_request(
    payment_id: str | None = None,
    *,
    count: int = 2,
    owner: str = "",
    key: str | None = None,
    priority: int = 0,
    contact: common_pb2.ContactInfo | None = None,
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
        buyer_contact=contact,
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


async def outbox_envelopes(postgres_url: str, app: App) -> list[common_pb2.EventEnvelope]:
    """Every event the app staged in its outbox, in order, as the envelopes relays deliver."""
    conn = await asyncpg.connect(postgres_url)
    try:
        rows = await conn.fetch(
            f'SELECT topic, key, type_name, payload FROM "{app.settings.schema_name}".outbox '
            "ORDER BY seq"
        )
    finally:
        await conn.close()
    envelopes = []
    for row in rows:
        assert row["type_name"] == common_pb2.EventEnvelope.DESCRIPTOR.full_name
        envelope = common_pb2.EventEnvelope.FromString(bytes(row["payload"]))
        assert (row["topic"], row["key"]) == (envelope.event_type, envelope.aggregate_id)
        envelopes.append(envelope)
    return envelopes


async def outbox_events(postgres_url: str, app: App, event_cls: type[E]) -> list[E]:
    """The app's outbox events of one contract type, unpacked from their envelopes."""
    found = []
    for envelope in await outbox_envelopes(postgres_url, app):
        if envelope.event_type == event_cls.DESCRIPTOR.full_name:
            event = event_cls()
            assert envelope.payload.Unpack(event)
            found.append(event)
    return found


def rpc_settings(server: LiteSvmRpcServer, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "solana_chain": "rpc",
        "solana_rpc_url": server.url,
        "solana_confirm_poll_s": 0.01,
        "solana_resend_interval_s": 0.05,
        "solana_confirm_timeout_s": 1.0,
        "solana_dev_airdrop_lamports": 100 * 10**9,
        # The kit guard without a rate limit or breaker (its state in Redis is shared by every
        # test of the session) and with quick retries.
        "provider_policies": json.dumps(
            {
                "solana": {
                    "rate": None,
                    "concurrency": None,
                    "breaker": False,
                    "backoff_base_s": 0.01,
                    "max_attempts": 5,
                    "retry_budget_min_per_s": 1000,
                }
            }
        ),
    }
    values.update(overrides)
    return values


async def schema_execute(postgres_url: str, app: App, sql: str, *args: Any) -> None:
    """Run one statement in the app's schema (what an operator, or an attacker, could do)."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'SET search_path TO "{app.settings.schema_name}"')
        await conn.execute(sql, *args)
    finally:
        await conn.close()


LEGACY_FACTS = (
    ("event", "The Band: Fall Tour"),
    ("venue", "Grand Hall"),
    ("date", "2026-05-01T20:00:00Z"),
    ("section", "A"),
    ("row", "12"),
    ("seat", "0"),
    ("type", "VIP"),
)


async def mint_legacy_ticket(
    app: App,
    stub: nft_pb2_grpc.NftServiceStub,
    md: Any,
    postgres_url: str,
    *,
    owner: str = "",
) -> nft_pb2.TicketMintResult:
    """A ticket as the earlier layout minted it: the facts as additional fields on the mint,
    the uri `<base>/metadata/<sha256 hex>.json`, and a document without the mint address.

    It is minted on chain at the address the service derives for it, then queued with
    MintTickets: the minter finds it there as ours (nothing sent twice) and records it; our
    record then gets the earlier uri and document, as a ticket minted before would have."""
    request = mint_request(count=1, owner=owner)
    spec = request.tickets[0]
    payer = load_payer(_settings(app))
    derivation = derivation_of(app)
    seed = derivation.mint_seed(request.payment_id, spec.ticket_id)
    mint = mint_address(payer.pubkey(), seed)
    holder = Pubkey.from_string(owner) if owner else derivation.custodial_address("buyer-1")
    document = {
        "name": spec.event_name,
        "symbol": "TIX",
        "description": "VIP ticket for The Band: Fall Tour at Grand Hall.",
        "image": spec.image_url,
        "attributes": [{"trait_type": k, "value": v} for k, v in LEGACY_FACTS],
        "properties": {"category": "image", "ticket_id": spec.ticket_id, "event_id": "event-1"},
    }
    sha, body = canonical(document)
    uri = legacy_metadata_uri(f"http://127.0.0.1:{app.http_port}/metadata", sha)
    metadata = TicketMetadata(spec.event_name, "TIX", uri, fields=LEGACY_FACTS)
    chain = local_chain(app)
    lamports = await chain.rent_exempt_minimum(mint_account_len(metadata))
    blockhash = await chain.latest_blockhash()
    ixs = mint_instructions(
        payer=payer.pubkey(), seed=seed, holder=holder, metadata=metadata, mint_lamports=lamports
    )
    outcome = await chain.submit(sign(ixs, payer, blockhash.blockhash), blockhash, MINT_FUNDING)
    assert outcome.status is TxStatus.LANDED, outcome

    reply = await stub.MintTickets(request, metadata=md)
    job = await wait_job(stub, md, reply.job.id)
    (result,) = job.results
    assert result.state == nft_pb2.MINT_STATE_MINTED and result.mint_address == str(mint)
    await schema_execute(
        postgres_url,
        app,
        "INSERT INTO nft_metadata (sha, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        sha,
        body,
    )
    cost = lamports + await chain.rent_exempt_minimum(TOKEN_ACCOUNT_SPACE) + SIGNATURE_FEE
    await schema_execute(
        postgres_url,
        app,
        "UPDATE ticket_nfts SET metadata_sha = $2, metadata_uri = $3, token_name = NULL, "
        "token_symbol = NULL, cost_lamports = $4, mint_size = NULL WHERE ticket_id = $1",
        result.ticket_id,
        sha,
        uri,
        cost,
    )
    legacy = nft_pb2.TicketMintResult()
    legacy.CopyFrom(result)
    legacy.metadata_uri = uri
    return legacy
