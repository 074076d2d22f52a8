"""Settings of the nft service: the kit's settings plus this service's own."""

from __future__ import annotations

from typing import ClassVar

from meshkit.settings import KitSettings


class NftSettings(KitSettings):
    """Environment variables of the nft service (see the README for the full list)."""

    service_name: ClassVar[str] = "nft"
    default_grpc_port: ClassVar[int] = 50052
    default_ops_port: ClassVar[int] = 9102
    default_http_port: ClassVar[int] = 8082
