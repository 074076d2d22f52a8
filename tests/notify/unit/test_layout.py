"""The service layout's rules, read from the source (DESIGN.md "Service layout"):

* domain/ is pure: no grpc, protobuf, asyncpg, provider SDKs, HTTP or kit imports, and nothing
  of the service outside domain/ (jinja2, email-validator and phonenumbers are pure libraries);
* a request goes down once: api → usecases → (store | adapters); nothing imports upwards;
* use cases do not call each other sideways: only the shared steps are imported by others;
* the provider SDKs are imported by their adapter alone.
"""

from __future__ import annotations

import notify_service
from meshdev.testing.layout import Layout, unmapped_errors
from notify_service.api.errors import MAP, to_mesh_error
from notify_service.domain import errors

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


LAYOUT = Layout.of(notify_service, allowed=ALLOWED, shared_steps=SHARED_STEPS, sdks=SDKS)


def test_domain_imports_nothing_but_pure_libraries_and_itself() -> None:
    assert LAYOUT.domain_problems(FORBIDDEN_IN_DOMAIN) == []


def test_layers_only_import_downwards() -> None:
    assert LAYOUT.layer_problems() == []


def test_use_cases_share_steps_instead_of_calling_each_other() -> None:
    assert LAYOUT.use_case_problems() == []
    assert LAYOUT.files_containing("usecases", "Request)") == [], "use cases take proto requests"


def test_each_provider_sdk_is_imported_by_its_adapter_alone() -> None:
    assert LAYOUT.sdk_problems() == []


def test_production_code_never_imports_the_dev_kit() -> None:
    assert LAYOUT.dev_kit_problems() == []


def test_every_domain_error_has_its_entry_in_the_error_map() -> None:
    assert unmapped_errors(errors, errors.NotifyError, MAP) == []


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
