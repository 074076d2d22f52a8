"""Wiring of the nft service: what the kit builds at start and serves.

Built once, in this order: keys (start-up fails on a missing or malformed payer key in
production), the chain (LiteSVM or RPC, per settings), `NftCore`, the metadata HTTP route, the
mint workers, the wallet gauge job, and a closer that releases the chain after the workers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from meshkit.jobs import PeriodicJob
from meshkit.migrations import MigrationSource
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from nft_service.chain import build_chain
from nft_service.core import NftCore, NftMetrics
from nft_service.http import ROUTE, MetadataRoute
from nft_service.keys import Derivation, load_derivation_secret, load_payer
from nft_service.minter import Minter
from nft_service.policy import POLICY
from nft_service.servicer import NftServicer
from nft_service.settings import NftSettings
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc

logger = logging.getLogger(__name__)


class ChainCloser:
    """A worker that does nothing until shutdown, then waits for the mint workers to finish their
    round and closes the chain (the kit stops workers after RPCs have drained)."""

    def __init__(self, core: NftCore, minters: Sequence[Minter], grace: float) -> None:
        self._core = core
        self._minters = minters
        self._grace = grace
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        await self._stopping.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._grace):
                for minter in self._minters:
                    await minter.finished.wait()
        await self._core.close()

    def stop(self) -> None:
        self._stopping.set()


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    settings = cast(NftSettings, kit.settings)
    payer = load_payer(settings)
    core = NftCore(
        settings=settings,
        db=kit.db,
        chain=build_chain(settings, kit.guards["solana"]),
        payer=payer,
        derivation=Derivation(load_derivation_secret(settings)),
        metrics=NftMetrics(kit.registry),
        http_port=lambda: kit.http.port,
    )
    await core.start()
    kit.add_http_route("GET", ROUTE, MetadataRoute(kit.db).handle)
    minters = [Minter(core, f"nft-minter-{i}") for i in range(settings.nft_mint_workers)]
    for minter in minters:
        kit.add_worker(minter.name, minter)
    kit.add_worker(
        "nft-wallet",
        PeriodicJob("nft-wallet", settings.nft_wallet_check_interval_s, core.check_wallet),
    )
    kit.add_worker("nft-chain-closer", ChainCloser(core, minters, settings.shutdown_grace_s))
    return [
        ServiceRegistration(
            descriptor=nft_pb2.DESCRIPTOR.services_by_name["NftService"],
            add_to_server=nft_pb2_grpc.add_NftServiceServicer_to_server,
            servicer=NftServicer(kit, core),
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=NftSettings,
    migrations=MigrationSource("nft", Path(__file__).parent / "migrations"),
    build=build,
)
