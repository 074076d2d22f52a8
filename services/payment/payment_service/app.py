"""Wiring of the payment service: what the kit builds at start and serves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshkit.migrations import MigrationSource
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from payment_service.policy import POLICY
from payment_service.servicer import PaymentServicer
from payment_service.settings import PaymentSettings
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    return [
        ServiceRegistration(
            descriptor=payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
            add_to_server=payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            # RPCs not built yet answer UNIMPLEMENTED through the generated base class.
            servicer=PaymentServicer(kit),  # type: ignore[abstract]
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=PaymentSettings,
    migrations=MigrationSource("payment", Path(__file__).parent / "migrations"),
    build=build,
)
