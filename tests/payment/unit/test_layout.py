"""The service layout's rules, checked on the source: the domain stays pure, the Stripe SDK stays
in its adapter, and every domain error has its place in the error map."""

from __future__ import annotations

from pathlib import Path

import payment_service
from meshdev.testing.layout import Layout, forbidden_imports, unmapped_errors
from payment_service.api.errors import MAP, to_mesh_error
from payment_service.domain import errors

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
SDKS = {"stripe": {"adapters/stripe_gateway.py"}}

LAYOUT = Layout.of(payment_service, sdks=SDKS)


def test_domain_imports_nothing_but_the_standard_library_and_itself() -> None:
    files = LAYOUT.files("domain", recursive=False)
    assert len(files) >= 10
    problems = {LAYOUT.relative(f): forbidden_imports(f, FORBIDDEN_IN_DOMAIN) for f in files}
    assert {f: p for f, p in problems.items() if p} == {}


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncpg\nfrom meshkit.errors import NotFound\nimport dataclasses\n")
    assert forbidden_imports(bad, FORBIDDEN_IN_DOMAIN) == ["asyncpg", "meshkit.errors"]


def test_only_the_adapter_imports_the_stripe_sdk() -> None:
    assert LAYOUT.sdk_problems() == []


def test_use_cases_never_take_proto_requests() -> None:
    problems = LAYOUT.files_containing("usecases", "Request)", "_pb2.Create", recursive=False)
    assert problems == []


def test_every_domain_error_has_its_entry_in_the_error_map() -> None:
    # Every error is mapped, categories included (a fallback for a new error of theirs).
    assert unmapped_errors(errors, errors.PaymentError, MAP) == []


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


def test_production_code_never_imports_the_dev_kit() -> None:
    assert LAYOUT.dev_kit_problems() == []
