"""The service layout's import rules, read from the source (DESIGN.md "Service layout"):

* domain/ is pure: no grpc, protobuf, asyncpg, chain SDKs, HTTP or kit imports, and nothing of
  the service outside domain/;
* a request goes down once: api → usecases → (store | adapters); nothing imports upwards;
* use cases do not call each other sideways: only the shared steps (`onchain`, `events`,
  `metrics`, `sending`, `revocation`) are imported by other use case modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import nft_service

PACKAGE = Path(nft_service.__file__).parent

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


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    return _imports_in(path.read_text(), str(path))


def _imports_in(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _layer_files(layer: str) -> list[Path]:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no files in {layer}/"
    return files


def test_domain_imports_nothing_but_the_standard_library_and_itself() -> None:
    problems = []
    for path in _layer_files("domain"):
        for line, module in _imports(path):
            top = module.split(".")[0]
            outside = top == "nft_service" and not module.startswith("nft_service.domain")
            if top in FORBIDDEN_IN_DOMAIN or outside:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert problems == []


def test_layers_only_import_downwards() -> None:
    problems = []
    for layer, allowed in ALLOWED.items():
        for path in _layer_files(layer):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] != "nft_service" or len(parts) < 2:
                    continue
                target = parts[1]
                if target in (layer, "domain") or target in allowed:
                    continue
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert problems == []


def test_use_cases_share_steps_instead_of_calling_each_other() -> None:
    problems = []
    for path in _layer_files("usecases"):
        for line, module in _imports(path):
            if not module.startswith("nft_service.usecases."):
                continue
            target = module.split(".")[2]
            if target != path.stem and target not in SHARED_STEPS:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert problems == []


def test_the_rule_sees_every_kind_of_import() -> None:
    source = "import asyncpg\nfrom solders.pubkey import Pubkey\nif x:\n    import grpc.aio\n"
    assert [m for _, m in _imports_in(source)] == ["asyncpg", "solders.pubkey", "grpc.aio"]
