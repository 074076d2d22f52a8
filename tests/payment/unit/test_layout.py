"""The service layout's rules, checked on the source: the domain stays pure, the Stripe SDK stays
in its adapter, and every domain error has its place in the error map."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import payment_service
from payment_service.api.errors import MAP, to_mesh_error
from payment_service.domain import errors

PACKAGE = Path(payment_service.__file__).parent

# What pure code must not reach: transports, databases, SDKs, the kit, and the service's outer
# layers (the domain is what they are built on, never the other way round).
FORBIDDEN_IN_DOMAIN = (
    "grpc",
    "google.protobuf",
    "google.rpc",
    "tickettoken",
    "asyncpg",
    "stripe",
    "aiohttp",
    "httpx",
    "redis",
    "prometheus_client",
    "meshkit",
    "payment_service.api",
    "payment_service.usecases",
    "payment_service.store",
    "payment_service.adapters",
    "payment_service.http",
    "payment_service.jobs",
)


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def offending(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return [
        m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden)
    ]


def test_domain_imports_nothing_but_the_standard_library_and_itself() -> None:
    files = sorted((PACKAGE / "domain").glob("*.py"))
    assert len(files) >= 10
    problems = {str(f.relative_to(PACKAGE)): offending(f, FORBIDDEN_IN_DOMAIN) for f in files}
    assert {f: p for f, p in problems.items() if p} == {}


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncpg\nfrom meshkit.errors import NotFound\nimport dataclasses\n")
    assert offending(bad, FORBIDDEN_IN_DOMAIN) == ["asyncpg", "meshkit.errors"]


def test_only_the_adapter_imports_the_stripe_sdk() -> None:
    users = {
        str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py") if offending(f, ("stripe",))
    }
    assert users == {"adapters/stripe_gateway.py"}


def test_use_cases_never_take_proto_requests() -> None:
    for path in sorted((PACKAGE / "usecases").glob("*.py")):
        text = path.read_text()
        assert "Request)" not in text and "_pb2.Create" not in text, path.name


def test_every_domain_error_has_its_entry_in_the_error_map() -> None:
    classes = [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.PaymentError) and cls.__module__ == errors.__name__
    ]
    # Every error is mapped, categories included (a fallback for a new error of theirs).
    assert [c.__name__ for c in classes if c is not errors.PaymentError and c not in MAP] == []


def test_error_map_details() -> None:
    invalid = to_mesh_error(
        errors.InvalidInput([errors.Violation("line_items", "at most 4 tickets per order")])
    )
    assert invalid is not None and invalid.code.name == "INVALID_ARGUMENT"
    assert [(v.field, v.description) for v in invalid.field_violations] == [
        ("line_items", "at most 4 tickets per order")
    ]
    assert "line_items" in invalid.message
    busy = to_mesh_error(errors.CreateInProgress("wait", {"payment_id": "p"}, retry_after=3.0))
    assert busy is not None and busy.code.name == "ABORTED"
    assert (busy.reason, busy.metadata, busy.retry_after) == (
        "PAYMENT_CREATE_IN_PROGRESS",
        {"payment_id": "p"},
        3.0,
    )
    refused = to_mesh_error(errors.RefundExceedsRefundable("too much", {"refundable": "5"}))
    assert refused is not None and refused.code.name == "FAILED_PRECONDITION"
    assert refused.reason == "REFUND_EXCEEDS_REFUNDABLE"
    assert to_mesh_error(ValueError("not ours")) is None
