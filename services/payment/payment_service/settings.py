"""Settings of the payment service: the kit's settings plus this service's own."""

from __future__ import annotations

from typing import ClassVar

from meshkit.settings import KitSettings


class PaymentSettings(KitSettings):
    """Environment variables of the payment service (see the README for the full list)."""

    service_name: ClassVar[str] = "payment"
    default_grpc_port: ClassVar[int] = 50051
    default_ops_port: ClassVar[int] = 9101
    default_http_port: ClassVar[int] = 8081
