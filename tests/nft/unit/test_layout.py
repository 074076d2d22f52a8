"""The service layout's import rules, read from the source (DESIGN.md "Service layout"):

* domain/ is pure: no grpc, protobuf, asyncpg, chain SDKs, HTTP or kit imports, and nothing of
  the service outside domain/;
* a request goes down once: api → usecases → (store | adapters); nothing imports upwards;
* use cases do not call each other sideways: only the shared steps (`onchain`, `events`,
  `metrics`, `sending`, `revocation`) are imported by other use case modules.
"""

from __future__ import annotations

import nft_service
from meshdev.testing.layout import Layout, imports_in

FORBIDDEN_IN_DOMAIN = {
    "grpc",
    "google",
    "asyncpg",
    "solders",
    "solana",
    "spl",
    "aiohttp",
    "httpx",
    "httpx2",
    "meshkit",
    "tickettoken",
    "prometheus_client",
    "redis",
    "pydantic",
}
# Which layers each layer may import (besides itself and domain/).
ALLOWED = {
    "domain": set(),
    "adapters": {"settings"},
    "store": set(),
    "usecases": {"adapters", "store"},
    "jobs": {"adapters", "store", "usecases"},
    "http": {"usecases"},
    "api": {"usecases"},
}
SHARED_STEPS = {"onchain", "events", "metrics", "sending", "revocation"}


LAYOUT = Layout.of(nft_service, allowed=ALLOWED, shared_steps=SHARED_STEPS)


def test_domain_imports_nothing_but_the_standard_library_and_itself() -> None:
    assert LAYOUT.domain_problems(FORBIDDEN_IN_DOMAIN) == []


def test_layers_only_import_downwards() -> None:
    assert LAYOUT.layer_problems() == []


def test_use_cases_share_steps_instead_of_calling_each_other() -> None:
    assert LAYOUT.use_case_problems() == []


def test_the_rule_sees_every_kind_of_import() -> None:
    source = "import asyncpg\nfrom solders.pubkey import Pubkey\nif x:\n    import grpc.aio\n"
    assert [m for _, m in imports_in(source)] == ["asyncpg", "solders.pubkey", "grpc.aio"]


def test_production_code_never_imports_the_dev_kit() -> None:
    assert LAYOUT.dev_kit_problems() == []
