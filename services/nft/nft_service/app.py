"""Wiring of the nft service: what the kit builds at start and serves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshkit.migrations import MigrationSource
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from nft_service.policy import POLICY
from nft_service.servicer import NftServicer
from nft_service.settings import NftSettings
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    return [
        ServiceRegistration(
            descriptor=nft_pb2.DESCRIPTOR.services_by_name["NftService"],
            add_to_server=nft_pb2_grpc.add_NftServiceServicer_to_server,
            # RPCs not built yet answer UNIMPLEMENTED through the generated base class.
            servicer=NftServicer(kit),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=NftSettings,
    migrations=MigrationSource("nft", Path(__file__).parent / "migrations"),
    build=build,
)
