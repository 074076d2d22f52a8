"""The service layout's rules, read from the source (DESIGN.md "Service layout"):

* domain/ is pure: no grpc, protobuf, asyncpg, provider SDKs, HTTP or kit imports, and nothing
  of the service outside domain/ (jinja2, email-validator and phonenumbers are pure libraries);
* a request goes down once: api → usecases → (store | adapters); nothing imports upwards;
* use cases do not call each other sideways: only the shared steps are imported by others;
* the provider SDKs are imported by their adapter alone.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import notify_service
from notify_service.api.errors import MAP, to_mesh_error
from notify_service.domain import errors

PACKAGE = Path(notify_service.__file__).parent

FORBIDDEN_IN_DOMAIN = {
    "grpc",
    "google",
    "asyncpg",
    "aiohttp",
    "httpx",
    "aiosmtplib",
    "sendgrid",
    "python_http_client",
    "twilio",
    "meshkit",
    "tickettoken",
    "prometheus_client",
    "redis",
    "pydantic",
}
ALLOWED = {
    "domain": set(),
    "adapters": {"settings"},
    "store": set(),
    "usecases": {"adapters", "store"},
    "jobs": {"adapters", "store", "usecases"},
    "http": {"usecases", "api"},
    "api": {"usecases"},
}
SHARED_STEPS = {"events", "consent", "metrics", "links", "templates"}
SDKS = {
    "aiosmtplib": {"adapters/smtp.py"},
    "sendgrid": {"adapters/sendgrid.py"},
    "python_http_client": {"adapters/sendgrid.py"},
    "twilio": {"adapters/twilio.py"},
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
            outside = top == "notify_service" and not module.startswith("notify_service.domain")
            if top in FORBIDDEN_IN_DOMAIN or outside:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert problems == []


def test_layers_only_import_downwards() -> None:
    problems = []
    for layer, allowed in ALLOWED.items():
        for path in _layer_files(layer):
            for line, module in _imports(path):
                parts = module.split(".")
                if parts[0] != "notify_service" or len(parts) < 2:
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
            if not module.startswith("notify_service.usecases."):
                continue
            target = module.split(".")[2]
            if target != path.stem and target not in SHARED_STEPS:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
        text = path.read_text()
        assert "Request)" not in text, f"{path.name} takes a proto request"
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
        if issubclass(cls, errors.NotifyError) and cls.__module__ == errors.__name__
    ]
    assert [c.__name__ for c in classes if c is not errors.NotifyError and c not in MAP] == []


def test_error_map_details() -> None:
    missing = to_mesh_error(errors.MissingVariables(["venue"]))
    assert missing is not None and missing.code.name == "INVALID_ARGUMENT"
    assert missing.reason == "TEMPLATE_VARIABLES_MISSING"
    assert [(v.field, v.description) for v in missing.field_violations] == [
        ('variables["venue"]', "required by the template")
    ]
    push = to_mesh_error(errors.ChannelNotConfigured("CHANNEL_PUSH"))
    assert push is not None and push.code.name == "FAILED_PRECONDITION"
    assert (push.reason, push.metadata) == ("CHANNEL_NOT_CONFIGURED", {"channel": "CHANNEL_PUSH"})
    busy = to_mesh_error(errors.WebhookNotProcessed())
    assert busy is not None and busy.code.name == "UNAVAILABLE" and busy.retry_after == 5.0
    assert to_mesh_error(ValueError("not ours")) is None
