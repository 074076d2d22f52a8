"""The service layout's rules, read from the source (DESIGN.md "Service layout"):

* domain/ is pure: no grpc, protobuf, asyncpg, redis, provider SDKs, HTTP or kit imports
  (`cryptography` is a pure library: the sealing rules live there);
* a request goes down once: api → usecases → (store | adapters); nothing imports upwards;
* use cases do not call each other sideways: only the shared steps are imported by others;
* each provider SDK (and boto3) is imported by its adapter alone; nothing imports the dev kit;
* every domain error has its entry in the error map.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import integration_service
from integration_service.api.errors import MAP, to_mesh_error
from integration_service.domain import errors

PACKAGE = Path(integration_service.__file__).parent

FORBIDDEN_IN_DOMAIN = {
    "grpc",
    "google",
    "asyncpg",
    "aiohttp",
    "httpx",
    "redis",
    "square",
    "quickbooks",
    "intuitlib",
    "mailchimp_marketing",
    "stripe",
    "boto3",
    "botocore",
    "meshkit",
    "tickettoken",
    "pydantic",
}
ALLOWED = {
    "domain": set(),
    "adapters": set(),
    "store": set(),
    "usecases": {"adapters", "store"},
    "jobs": {"adapters", "store", "usecases"},
    "http": {"usecases", "api"},
    "api": {"usecases"},
    # The sync engine's workers (issue 14): they run jobs with the shared steps and the stores.
    "sync": {"adapters", "store", "usecases"},
}
SHARED_STEPS = {"events", "states", "tokens", "vault", "metrics", "sync"}  # sync: queue a job
SDKS = {
    "square": {"adapters/square.py"},
    "intuitlib": {"adapters/quickbooks.py"},
    "quickbooks": {"adapters/quickbooks.py"},
    "mailchimp_marketing": {"adapters/mailchimp.py"},
    "stripe": {"adapters/stripe.py"},
    "boto3": {"adapters/keys.py"},
    "botocore": {"adapters/keys.py"},
}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _layer_files(layer: str) -> list[Path]:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no files in {layer}/"
    return files


def test_domain_imports_nothing_but_pure_libraries_and_itself() -> None:
    problems = []
    for path in _layer_files("domain"):
        for line, module in _imports(path):
            top = module.split(".")[0]
            outside = top == "integration_service" and not module.startswith(
                "integration_service.domain"
            )
            if top in FORBIDDEN_IN_DOMAIN or outside:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert problems == []


def test_layers_only_import_downwards() -> None:
    problems = []
    for layer, allowed in ALLOWED.items():
        for path in _layer_files(layer):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] != "integration_service" or len(parts) < 2:
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
            if not module.startswith("integration_service.usecases."):
                continue
            target = module.split(".")[2]
            if target != path.stem and target not in SHARED_STEPS:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
        assert "Request)" not in path.read_text(), f"{path.name} takes a proto request"
    assert problems == []


def test_each_provider_sdk_is_imported_by_its_adapter_alone() -> None:
    for sdk, allowed in SDKS.items():
        users = {
            str(f.relative_to(PACKAGE))
            for f in PACKAGE.rglob("*.py")
            if any(m.split(".")[0] == sdk for _, m in _imports(f))
        }
        assert users == allowed, sdk


def test_production_code_never_imports_the_dev_kit() -> None:
    users = [
        str(f.relative_to(PACKAGE))
        for f in PACKAGE.rglob("*.py")
        if any(m.split(".")[0] == "meshdev" for _, m in _imports(f))
    ]
    assert users == []


def test_every_domain_error_has_its_entry_in_the_error_map() -> None:
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.IntegrationError) and cls.__module__ == errors.__name__
    ]
    assert [c.__name__ for c in classes if c is not errors.IntegrationError and c not in MAP] == []


def test_error_map_details() -> None:
    used = to_mesh_error(errors.OAuthStateUsed())
    assert used is not None and used.code.name == "INVALID_ARGUMENT"
    assert used.reason == "OAUTH_STATE_ALREADY_USED"
    assert [(v.field, v.description) for v in used.field_violations] == [
        ("state", "already used: every authorization completes once")
    ]
    busy = to_mesh_error(errors.RefreshBusy())
    assert busy is not None and busy.code.name == "UNAVAILABLE" and busy.retry_after == 1.0
    assert to_mesh_error(errors.CredentialCorrupt("x")) is None  # INTERNAL, details in logs
    assert to_mesh_error(ValueError("not ours")) is None
