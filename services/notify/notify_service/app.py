"""Wiring of the notify service: what the kit builds at start and serves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshkit.migrations import MigrationSource
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from notify_service.api.servicer import NotifyServicer
from notify_service.policy import POLICY
from notify_service.settings import NotifySettings
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    return [
        ServiceRegistration(
            descriptor=notify_pb2.DESCRIPTOR.services_by_name["NotifyService"],
            add_to_server=notify_pb2_grpc.add_NotifyServiceServicer_to_server,
            # RPCs not built yet answer UNIMPLEMENTED through the generated base class.
            servicer=NotifyServicer(kit),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=NotifySettings,
    migrations=MigrationSource("notify", Path(__file__).parent / "migrations"),
    build=build,
)
