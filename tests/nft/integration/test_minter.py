"""The minter runs on the dependencies it is handed: a Database, a chain, a payer, the shared
on-chain reads, the event publisher, metrics and its settings, with no service around it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from meshkit.db import Database
from meshkit.events import EventPublisher
from meshkit.migrations import KIT_MIGRATIONS, migrate
from nft_service.adapters.chain import LocalChain
from nft_service.adapters.chain.token import decode_mint
from nft_service.adapters.keys import Derivation
from nft_service.app import DEFINITION
from nft_service.domain.metadata import default_name, legacy_metadata_uri
from nft_service.domain.model import BuyerContact, MintRequest, Priority, TicketSpec
from nft_service.domain.retry import RetryPolicy
from nft_service.domain.states import JobStatus, MintState
from nft_service.jobs.minter import Minter, MinterDeps, MinterSettings
from nft_service.usecases.events import TicketEvents
from nft_service.usecases.metrics import NftMetrics
from nft_service.usecases.minting import Minting, MintingRules
from nft_service.usecases.onchain import TicketsOnChain
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import events_pb2

CONTACT = BuyerContact({"name": "Ada", "email": "ada@example.com"})


def _request(payment_id: str, count: int) -> MintRequest:
    return MintRequest(
        payment_id=payment_id,
        order_id=f"order-{payment_id}",
        event_id="event-1",
        venue_id="venue-1",
        buyer_id="buyer-1",
        priority=Priority.HIGH,
        tickets=tuple(
            TicketSpec(
                ticket_id=f"{payment_id}-t{i}",
                owner_wallet="",
                event_name="The Band",
                venue_name="Hall",
                event_starts_at=datetime(2026, 5, 1, 20, tzinfo=UTC),
                section="A",
                row="1",
                seat=str(i),
                ticket_type="VIP",
                image_url="",
            )
            for i in range(count)
        ),
        buyer_contact=CONTACT,
    )


async def test_minter_runs_on_the_dependencies_it_is_given(
    database: Database, db_schema: str
) -> None:
    await migrate(database, db_schema, [KIT_MIGRATIONS, DEFINITION.migrations])
    chain = LocalChain(state_file=None)
    await chain.start()
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    wake = asyncio.Event()
    minting = Minting(
        db=database,
        derivation=Derivation(b"d" * 32),
        payer=payer.pubkey(),
        rules=MintingRules(max_batch=10, symbol="TIX"),
        base_url=lambda: "https://nft.example/metadata",
        wake=wake,
    )
    registry = CollectorRegistry()
    deps = MinterDeps(
        db=database,
        chain=chain,
        payer=payer,
        onchain=TicketsOnChain(chain, payer.pubkey()),
        events=TicketEvents(EventPublisher("nft"), cluster=chain.cluster),
        metrics=NftMetrics(registry),
        settings=MinterSettings(
            batch=2,
            lease_s=30.0,
            poll_s=0.05,
            symbol="TIX",
            retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.1),
        ),
        wake=wake,
    )
    minter = Minter("test-minter", deps)
    try:
        queued = await minting.mint_tickets(_request("pay-m1", 3))
        assert queued.status is JobStatus.QUEUED
        # Round by round: a batch of two, then the last one, then nothing.
        assert [await minter.mint_round() for _ in range(3)] == [2, 1, 0]
        done = await minting.job(job_id=queued.job.id)
        assert done.status is JobStatus.SUCCEEDED
        accounts = await chain.get_accounts(
            [Pubkey.from_string(t.mint_address) for t in done.tickets]
        )
        for ticket, account in zip(done.tickets, accounts.accounts, strict=True):
            assert ticket.mint_state is MintState.MINTED and account is not None
            state = decode_mint(bytes(account.data))
            assert (state.supply, state.permanent_delegate, state.uri) == (
                1,
                payer.pubkey(),
                ticket.metadata_uri,
            )
        assert registry.get_sample_value("nft_mint_outcomes_total", {"outcome": "minted"}) == 3

        # As a worker: it wakes on new work, and stops when asked.
        running = asyncio.create_task(minter.run())
        more = await minting.mint_tickets(_request("pay-m2", 2))
        for _ in range(200):
            if (await minting.job(job_id=more.job.id)).status is JobStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.02)
        minter.stop()
        await asyncio.wait_for(running, 5.0)
        assert (await minting.job(job_id=more.job.id)).status is JobStatus.SUCCEEDED

        async with database.acquire() as conn:
            rows = await conn.fetch("SELECT type_name, payload FROM outbox ORDER BY seq")
        envelopes = [common_pb2.EventEnvelope.FromString(bytes(r["payload"])) for r in rows]
        assert len(envelopes) == 5
        for envelope in envelopes:
            minted = events_pb2.TicketMinted()
            assert envelope.payload.Unpack(minted)
            assert minted.buyer_contact.email == "ada@example.com"
    finally:
        await chain.close()


async def test_ticket_queued_without_name_or_symbol_mints_with_the_defaults(
    database: Database, db_schema: str
) -> None:
    """A row without token_name / token_symbol (queued before they were recorded) and with a
    `<base>/<sha256>.json` uri is minted with the default name, the service's symbol and that
    uri, and nothing else on the mint."""
    await migrate(database, db_schema, [KIT_MIGRATIONS, DEFINITION.migrations])
    chain = LocalChain(state_file=None)
    await chain.start()
    payer = Keypair()
    await chain.fund(payer.pubkey(), 10**10)
    wake = asyncio.Event()
    minting = Minting(
        db=database,
        derivation=Derivation(b"e" * 32),
        payer=payer.pubkey(),
        rules=MintingRules(max_batch=10, symbol="TIX"),
        base_url=lambda: "https://tkt.example/m",
        wake=wake,
    )
    deps = MinterDeps(
        db=database,
        chain=chain,
        payer=payer,
        onchain=TicketsOnChain(chain, payer.pubkey()),
        events=TicketEvents(EventPublisher("nft"), cluster=chain.cluster),
        metrics=NftMetrics(CollectorRegistry()),
        settings=MinterSettings(
            batch=5,
            lease_s=30.0,
            poll_s=0.05,
            symbol="OLD",
            retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.1),
        ),
        wake=wake,
    )
    try:
        queued = await minting.mint_tickets(_request("pay-old", 1))
        (ticket,) = queued.tickets
        uri = legacy_metadata_uri("https://nft.example/metadata", ticket.metadata_sha)
        async with database.acquire() as conn:
            await conn.execute(
                "UPDATE ticket_nfts SET token_name = NULL, token_symbol = NULL, metadata_uri = $2 "
                "WHERE ticket_id = $1",
                ticket.ticket_id,
                uri,
            )
        assert await Minter("old", deps).mint_round() == 1
        (account,) = (await chain.get_accounts([Pubkey.from_string(ticket.mint_address)])).accounts
        assert account is not None
        state = decode_mint(bytes(account.data))
        assert (state.name, state.symbol, state.uri) == (default_name(ticket.spec), "OLD", uri)
        assert state.name == "The Band A-1-0" and state.fields == {}
    finally:
        await chain.close()
