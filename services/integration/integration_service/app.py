"""Wiring of the integration service: what the kit builds at start and serves."""

from __future__ import annotations

from collections.abc import Sequence

from integration_service.api.servicer import IntegrationServicer
from integration_service.policy import POLICY
from integration_service.settings import IntegrationSettings
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from tickettoken.integration.v1 import integration_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    return [
        ServiceRegistration.of(
            integration_pb2_grpc,
            "IntegrationService",
            # RPCs not built yet answer UNIMPLEMENTED through the generated base class.
            IntegrationServicer(kit),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition.of(IntegrationSettings, build, __file__)
