"""Wiring of the nft service: build everything once from the kit's shared resources, hand it in.

  keys (start-up fails on a missing or malformed payer key in production) → the chain (LiteSVM
  or RPC, per settings) and the metadata fetcher (both through the kit's guards) → the shared
  steps (tickets on chain, events) → the use cases → the servicer, the metadata routes, the
  minters, the wallet check and the event relay (TicketMinted / MintFailed → notify:
  jobs/relay.py).

Lifecycle (the kit's hooks): at start, once the ports are bound, the chain starts (and tries to
read the rent) and, outside production, the payer is airdropped; at stop, after the minters
finished their round, the chain and the fetcher are closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import cast

from meshkit.routing import EventRouter, add_event_relay
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from nft_service.adapters.chain import build_chain
from nft_service.adapters.keys import Derivation, load_derivation_secret, load_payer
from nft_service.adapters.metadata_http import PROVIDER as METADATA_PROVIDER
from nft_service.adapters.metadata_http import MetadataFetcher
from nft_service.api.errors import to_mesh_error
from nft_service.api.servicer import NftServicer
from nft_service.domain.model import RevocationMethod
from nft_service.domain.retry import RetryPolicy
from nft_service.http.metadata import LEGACY_ROUTE, ROUTE, MetadataRoute
from nft_service.jobs import wallet_check
from nft_service.jobs.minter import Minter, MinterDeps, MinterSettings
from nft_service.jobs.relay import NftRelay
from nft_service.policy import POLICY
from nft_service.settings import NftSettings
from nft_service.usecases.custody import Custody
from nft_service.usecases.events import TicketEvents
from nft_service.usecases.metrics import NftMetrics
from nft_service.usecases.minting import Minting, MintingRules
from nft_service.usecases.onchain import TicketsOnChain
from nft_service.usecases.tickets import Tickets
from nft_service.usecases.wallet import Wallet, WalletRules
from tickettoken.nft.v1 import nft_pb2_grpc


def metadata_base_url(settings: NftSettings, kit: Kit) -> Callable[[], str]:
    """The public base of the metadata uris: the setting, else this process's HTTP port (known
    once bound, hence a function) and the route's path."""
    configured = settings.nft_metadata_base_url.rstrip("/")
    if configured:
        return lambda: configured
    return lambda: kit.http.local_url(ROUTE.split("/{", 1)[0])


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    settings = cast(NftSettings, kit.settings)
    payer = load_payer(settings)
    derivation = Derivation(load_derivation_secret(settings))
    chain = build_chain(settings, kit.guards["solana"])
    fetcher = MetadataFetcher(kit.guards[METADATA_PROVIDER])
    metrics = NftMetrics(kit.registry)
    base_url = metadata_base_url(settings, kit)
    wake = asyncio.Event()

    onchain = TicketsOnChain(chain, payer.pubkey())
    events = TicketEvents(kit.events, cluster=chain.cluster)
    minting = Minting(
        db=kit.db,
        derivation=derivation,
        payer=payer.pubkey(),
        rules=MintingRules(max_batch=settings.nft_max_batch, symbol=settings.nft_symbol),
        base_url=base_url,
        wake=wake,
    )
    tickets = Tickets(db=kit.db, onchain=onchain, fetcher=fetcher)
    custody = Custody(
        db=kit.db,
        chain=chain,
        payer=payer,
        derivation=derivation,
        onchain=onchain,
        events=events,
        metrics=metrics,
        default_revocation=RevocationMethod(settings.nft_default_revocation),
        lease_s=settings.nft_worker_lease_s,
    )
    wallet = Wallet(
        db=kit.db,
        chain=chain,
        payer=payer.pubkey(),
        metrics=metrics,
        rules=WalletRules(
            low_balance_lamports=settings.nft_low_balance_lamports,
            symbol=settings.nft_symbol,
            dev_airdrop_lamports=settings.solana_dev_airdrop_lamports,
        ),
        base_url=base_url,
    )

    kit.on_start(chain.start)
    if not settings.is_production:
        kit.on_start(wallet.fund_for_dev)
    kit.on_stop(chain.close)  # after the workers: the kit stops them before its stop hooks
    kit.on_stop(fetcher.close)
    route = MetadataRoute(tickets)
    kit.add_http_route("GET", ROUTE, route.by_address)
    kit.add_http_route("GET", LEGACY_ROUTE, route.by_sha)
    minter_deps = MinterDeps(
        db=kit.db,
        chain=chain,
        payer=payer,
        onchain=onchain,
        events=events,
        metrics=metrics,
        settings=MinterSettings(
            batch=settings.nft_worker_batch,
            lease_s=settings.nft_worker_lease_s,
            poll_s=settings.nft_worker_poll_s,
            symbol=settings.nft_symbol,
            retry=RetryPolicy(
                max_attempts=settings.nft_max_attempts,
                base_delay=settings.nft_retry_base_s,
                max_delay=settings.nft_retry_max_s,
            ),
        ),
        wake=wake,
    )
    for i in range(settings.nft_mint_workers):
        name = f"nft-minter-{i}"
        kit.add_worker(name, Minter(name, minter_deps))
    kit.add_periodic_job(
        wallet_check.NAME,
        settings.nft_wallet_check_interval_s,
        wallet_check.wallet_check(wallet, minting, metrics),
    )
    relay = NftRelay(kit.clients, timeout_s=settings.relay_call_timeout_s)
    add_event_relay(kit, EventRouter(relay.routes(), registry=kit.registry, relay="nft"), settings)
    return [
        ServiceRegistration.of(
            nft_pb2_grpc,
            "NftService",
            NftServicer(minting=minting, tickets=tickets, custody=custody, wallet=wallet),
            policy=POLICY,
            errors=to_mesh_error,
        )
    ]


DEFINITION = ServiceDefinition.of(NftSettings, build, __file__)
