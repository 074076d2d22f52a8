"""ListProviders: the catalogue, whether this deployment has each provider's app credentials,
and the limits its guard keeps to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from integration_service.domain.catalog import CATALOG, ProviderSpec
from integration_service.domain.model import Provider


@dataclass(frozen=True, slots=True)
class Limits:
    rate: int
    period_s: int
    concurrency: int


@dataclass(frozen=True, slots=True)
class ProviderOffer:
    spec: ProviderSpec
    enabled: bool
    limits: Limits


class ProviderCases:
    def __init__(self, enabled: Mapping[Provider, bool], limits: Mapping[Provider, Limits]) -> None:
        self._offers = [
            ProviderOffer(spec, enabled.get(p, False), limits[p]) for p, spec in CATALOG.items()
        ]

    def list(self) -> list[ProviderOffer]:
        return list(self._offers)
