"""Settings of the integration service: the kit's settings plus this service's own."""

from __future__ import annotations

from typing import ClassVar

from meshkit.settings import KitSettings


class IntegrationSettings(KitSettings):
    """Environment variables of the integration service (see the README for the full list)."""

    service_name: ClassVar[str] = "integration"
    default_grpc_port: ClassVar[int] = 50054
    default_ops_port: ClassVar[int] = 9104
    default_http_port: ClassVar[int] = 8084
