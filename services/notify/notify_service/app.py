"""Wiring of the notify service: what the kit builds at start and serves."""

from __future__ import annotations

from collections.abc import Sequence

from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from notify_service.api.servicer import NotifyServicer
from notify_service.policy import POLICY
from notify_service.settings import NotifySettings
from tickettoken.notify.v1 import notify_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    return [
        ServiceRegistration.of(
            notify_pb2_grpc,
            "NotifyService",
            # RPCs not built yet answer UNIMPLEMENTED through the generated base class.
            NotifyServicer(kit),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition.of(NotifySettings, build, __file__)
