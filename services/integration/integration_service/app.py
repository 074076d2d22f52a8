"""Wiring of the integration service: what the kit builds at start and serves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from integration_service.api.servicer import IntegrationServicer
from integration_service.policy import POLICY
from integration_service.settings import IntegrationSettings
from meshkit.migrations import MigrationSource
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from tickettoken.integration.v1 import integration_pb2, integration_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    return [
        ServiceRegistration(
            descriptor=integration_pb2.DESCRIPTOR.services_by_name["IntegrationService"],
            add_to_server=integration_pb2_grpc.add_IntegrationServiceServicer_to_server,
            # RPCs not built yet answer UNIMPLEMENTED through the generated base class.
            servicer=IntegrationServicer(kit),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=IntegrationSettings,
    migrations=MigrationSource("integration", Path(__file__).parent / "migrations"),
    build=build,
)
