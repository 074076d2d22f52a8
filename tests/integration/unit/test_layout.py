"""The service layout's rules, read from the source (DESIGN.md "Service layout"):

* domain/ is pure: no grpc, protobuf, asyncpg, redis, provider SDKs, HTTP or kit imports
  (`cryptography` is a pure library: the sealing rules live there);
* a request goes down once: api → usecases → (store | adapters); nothing imports upwards;
* use cases do not call each other sideways: only the shared steps are imported by others;
* each provider SDK (and boto3) is imported by its adapter alone; nothing imports the dev kit;
* every domain error has its entry in the error map.
"""

from __future__ import annotations

import integration_service
from integration_service.api.errors import MAP, to_mesh_error
from integration_service.domain import errors
from meshdev.testing.layout import Layout, unmapped_errors

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


LAYOUT = Layout.of(integration_service, allowed=ALLOWED, shared_steps=SHARED_STEPS, sdks=SDKS)


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
    assert unmapped_errors(errors, errors.IntegrationError, MAP) == []


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
