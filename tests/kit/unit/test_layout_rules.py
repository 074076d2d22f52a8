"""meshdev.testing.layout reports every kind of breach of the service layout: each rule is run on
a small package written to a temporary folder, once clean and once with a violation of its own."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from meshdev.testing.layout import Layout, unmapped_errors

ALLOWED = {
    "domain": set(),
    "adapters": set(),
    "store": set(),
    "usecases": {"adapters", "store"},
}
CLEAN = {
    "__init__.py": "",
    "domain/__init__.py": "",
    "domain/orders.py": "import dataclasses\nfrom shop_service.domain import money\n",
    "domain/money.py": "",
    "adapters/__init__.py": "",
    "adapters/gateway.py": "import paysdk.client\n",
    "store/__init__.py": "",
    "store/orders.py": "from shop_service.domain.orders import Order\n",
    "usecases/__init__.py": "",
    "usecases/events.py": "from shop_service.store import orders\n",
    "usecases/orders.py": (
        "from shop_service.adapters.gateway import charge\n"
        "from shop_service.usecases.events import publish\n"
    ),
    "usecases/refunds.py": "from shop_service.usecases import events\n",
}


def shop(tmp_path: Path, **changes: str) -> Layout:
    """A `shop_service` package in `tmp_path`: the clean files, with `changes` (path with `__`
    for `/` → source) written over them."""
    root = tmp_path / "shop_service"
    files = CLEAN | {name.replace("__", "/") + ".py": text for name, text in changes.items()}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return Layout(
        name="shop_service",
        root=root,
        allowed=ALLOWED,
        shared_steps={"events"},
        sdks={"paysdk": {"adapters/gateway.py"}},
    )


def test_a_package_that_keeps_the_layout_has_no_problems(tmp_path: Path) -> None:
    layout = shop(tmp_path)
    assert layout.domain_problems({"asyncpg", "google.protobuf"}) == []
    assert layout.layer_problems() == []
    assert layout.use_case_problems() == []
    assert layout.sdk_problems() == []
    assert layout.dev_kit_problems() == []
    assert layout.files_containing("usecases", "Request)") == []


def test_a_domain_module_importing_an_adapter_or_a_driver_is_reported(tmp_path: Path) -> None:
    layout = shop(
        tmp_path,
        domain__orders="import asyncpg\nfrom google.protobuf import any_pb2\nimport google.auth\n"
        "from shop_service.adapters.gateway import charge\nfrom shop_service import settings\n",
    )
    assert layout.domain_problems({"asyncpg", "google.protobuf"}) == [
        "domain/orders.py:1 imports asyncpg",
        "domain/orders.py:2 imports google.protobuf",
        "domain/orders.py:4 imports shop_service.adapters.gateway",
        "domain/orders.py:5 imports shop_service",
    ]
    assert layout.layer_problems() == [
        "domain/orders.py:4 imports shop_service.adapters.gateway",
        "domain/orders.py:5 imports shop_service.settings",  # `from shop_service import settings`
    ]


def test_a_layer_imported_by_its_package_name_is_reported(tmp_path: Path) -> None:
    layout = shop(
        tmp_path,
        store__orders="from shop_service import usecases\n",
        usecases__refunds="from shop_service.usecases import orders\n",
    )
    assert layout.layer_problems() == ["store/orders.py:1 imports shop_service.usecases"]
    assert layout.use_case_problems() == [
        "usecases/refunds.py:1 imports shop_service.usecases.orders"
    ]


def test_a_layer_importing_upwards_is_reported(tmp_path: Path) -> None:
    layout = shop(
        tmp_path, store__orders="def f() -> None:\n    from shop_service.usecases import orders\n"
    )
    assert layout.layer_problems() == ["store/orders.py:2 imports shop_service.usecases"]


def test_a_use_case_importing_another_use_case_is_reported(tmp_path: Path) -> None:
    layout = shop(tmp_path, usecases__refunds="from shop_service.usecases.orders import place\n")
    assert layout.use_case_problems() == [
        "usecases/refunds.py:1 imports shop_service.usecases.orders"
    ]


def test_an_sdk_imported_outside_its_adapter_or_not_at_all_is_reported(tmp_path: Path) -> None:
    layout = shop(tmp_path, store__orders="from paysdk import types\n")
    assert layout.sdk_problems() == [
        "paysdk is imported by ['adapters/gateway.py', 'store/orders.py'],"
        " expected ['adapters/gateway.py']"
    ]
    layout = shop(tmp_path / "unused", adapters__gateway="")
    assert layout.sdk_problems() == ["paysdk is imported by [], expected ['adapters/gateway.py']"]


def test_a_module_importing_the_dev_kit_is_reported(tmp_path: Path) -> None:
    layout = shop(tmp_path, usecases__events="from meshdev.testing.rpc import reason\n")
    assert layout.dev_kit_problems() == ["usecases/events.py imports meshdev"]


def test_a_use_case_taking_a_proto_request_is_reported(tmp_path: Path) -> None:
    layout = shop(tmp_path, usecases__orders="def place(r: pb.PlaceRequest) -> None: ...\n")
    assert layout.files_containing("usecases", "Request)", "_pb2.Create") == [
        "usecases/orders.py contains 'Request)'"
    ]


def test_a_layer_without_files_fails_instead_of_passing_on_nothing(tmp_path: Path) -> None:
    layout = shop(tmp_path)
    layout = Layout(layout.name, layout.root, allowed={**ALLOWED, "jobs": {"usecases"}})
    with pytest.raises(AssertionError, match="no files in jobs/"):
        layout.layer_problems()


def test_a_domain_error_missing_from_the_error_map_is_reported() -> None:
    errors = types.ModuleType("shop_errors")
    base = type("ShopError", (Exception,), {"__module__": errors.__name__})
    out_of_stock = type("OutOfStock", (base,), {"__module__": errors.__name__})
    expired = type("Expired", (base,), {"__module__": errors.__name__})
    imported = type("Imported", (base,), {"__module__": "elsewhere"})  # not defined here: skipped
    for cls in (base, out_of_stock, expired, imported):
        setattr(errors, cls.__name__, cls)
    assert unmapped_errors(errors, base, {out_of_stock: "NOT_FOUND"}) == ["Expired"]
    assert unmapped_errors(errors, base, {out_of_stock: 1, expired: 2}) == []
