"""Settings of the notify service: the kit's settings plus this service's own."""

from __future__ import annotations

from typing import ClassVar

from meshkit.settings import KitSettings


class NotifySettings(KitSettings):
    """Environment variables of the notify service (see the README for the full list)."""

    service_name: ClassVar[str] = "notify"
    default_grpc_port: ClassVar[int] = 50053
    default_ops_port: ClassVar[int] = 9103
    default_http_port: ClassVar[int] = 8083
