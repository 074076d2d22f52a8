"""Contract tests for the v1 protos and the generated ``tickettoken`` package.

They prove the committed generated code matches protos/, that each service has exactly the RPCs
DESIGN.md lists, and the API-wide rules: ``*_UNSPECIFIED`` enum zero values, an idempotency key on
every mutating request, Money for money and never a float, pagination and timestamp conventions.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

ROOT = Path(__file__).resolve().parents[2]

# Every generated message module of the contracts package.
PB2_MODULES = (
    "tickettoken.common.v1.common_pb2",
    "tickettoken.payment.v1.payment_pb2",
    "tickettoken.nft.v1.nft_pb2",
    "tickettoken.notify.v1.notify_pb2",
    "tickettoken.integration.v1.integration_pb2",
)

# The RPCs of each service, exactly as DESIGN.md lists them.
SERVICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tickettoken.payment.v1.PaymentService": (
        "tickettoken.payment.v1.payment_pb2",
        (
            "CalculateFees",
            "CreatePayment",
            "GetPayment",
            "ListPayments",
            "RefundPayment",
            "CancelPayment",
            "HandleProviderWebhook",
            "GetVenueBalance",
            "RequestPayout",
            "ReconcilePayments",
        ),
    ),
    "tickettoken.nft.v1.NftService": (
        "tickettoken.nft.v1.nft_pb2",
        (
            "MintTickets",
            "GetMintJob",
            "GetTicketNft",
            "ListTicketNfts",
            "TransferTicket",
            "RevokeTicket",
            "VerifyOwnership",
            "GetMintingWallet",
        ),
    ),
    "tickettoken.notify.v1.NotifyService": (
        "tickettoken.notify.v1.notify_pb2",
        (
            "SendNotification",
            "GetNotification",
            "ListNotifications",
            "UpsertTemplate",
            "GetTemplate",
            "RenderTemplate",
            "SetPreferences",
            "GetPreferences",
            "HandleProviderWebhook",
        ),
    ),
    "tickettoken.integration.v1.IntegrationService": (
        "tickettoken.integration.v1.integration_pb2",
        (
            "ListProviders",
            "StartOAuth",
            "CompleteOAuth",
            "ConnectWithApiKey",
            "GetConnection",
            "ListConnections",
            "TestConnection",
            "Disconnect",
            "SetFieldMappings",
            "GetFieldMappings",
            "StartSync",
            "GetSyncJob",
            "WatchSyncJob",
            "CancelSync",
            "ListSyncLogs",
            "ListDeadLetters",
            "RetryDeadLetters",
            "HandleProviderWebhook",
        ),
    ),
}

# The only server-streaming RPC; every other RPC is unary.
SERVER_STREAMING = {"tickettoken.integration.v1.IntegrationService.WatchSyncJob"}

# RPCs that change state: their requests carry `string idempotency_key = 1`.
MUTATING_RPCS = {
    "tickettoken.payment.v1.PaymentService.CreatePayment",
    "tickettoken.payment.v1.PaymentService.RefundPayment",
    "tickettoken.payment.v1.PaymentService.CancelPayment",
    "tickettoken.payment.v1.PaymentService.RequestPayout",
    "tickettoken.payment.v1.PaymentService.ReconcilePayments",
    "tickettoken.nft.v1.NftService.MintTickets",
    "tickettoken.nft.v1.NftService.TransferTicket",
    "tickettoken.nft.v1.NftService.RevokeTicket",
    "tickettoken.notify.v1.NotifyService.SendNotification",
    "tickettoken.notify.v1.NotifyService.UpsertTemplate",
    "tickettoken.notify.v1.NotifyService.SetPreferences",
    "tickettoken.integration.v1.IntegrationService.StartOAuth",
    "tickettoken.integration.v1.IntegrationService.CompleteOAuth",
    "tickettoken.integration.v1.IntegrationService.ConnectWithApiKey",
    "tickettoken.integration.v1.IntegrationService.Disconnect",
    "tickettoken.integration.v1.IntegrationService.SetFieldMappings",
    "tickettoken.integration.v1.IntegrationService.StartSync",
    "tickettoken.integration.v1.IntegrationService.CancelSync",
    "tickettoken.integration.v1.IntegrationService.RetryDeadLetters",
}

MONEY = "tickettoken.common.v1.Money"
TIMESTAMP = "google.protobuf.Timestamp"
# Name parts that mark a field as an amount of money.
MONEY_WORDS = frozenset(
    {
        "amount",
        "price",
        "fee",
        "tax",
        "subtotal",
        "total",
        "refunded",
        "refundable",
        "payable",
        "balance",
        "payout",
    }
)
# Numeric fields with a money word that hold a rate, a native chain unit or a count, not money.
NUMERIC_SUFFIXES = ("_minor", "_bps", "_lamports", "_count")
# Messages made of Money fields that may sit in a money-named field (e.g. `tax`, `balance`).
MONEY_COMPOSITES = {
    "tickettoken.payment.v1.FeeBreakdown",
    "tickettoken.payment.v1.TaxBreakdown",
    "tickettoken.payment.v1.VenueBalance",
    "tickettoken.payment.v1.Payout",
}
NUMERIC_NOT_MONEY = {"tickettoken.integration.v1.SyncJob.records_total"}
NUMERIC_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_FLOAT,
    FieldDescriptor.TYPE_DOUBLE,
}


def file_descriptors() -> list[FileDescriptor]:
    """Import every generated module and return its file descriptor."""
    return [importlib.import_module(name).DESCRIPTOR for name in PB2_MODULES]


def walk_messages(messages: list[Descriptor]) -> Iterator[Descriptor]:
    """Yield the given messages and all their nested messages (map entries included)."""
    for message in messages:
        yield message
        yield from walk_messages(list(message.nested_types))


def all_messages() -> list[Descriptor]:
    """Every message type defined by the contracts, nested ones included."""
    return [
        message
        for fd in file_descriptors()
        for message in walk_messages(list(fd.message_types_by_name.values()))
    ]


def all_enums() -> list[EnumDescriptor]:
    """Every enum type defined by the contracts, nested ones included."""
    enums = [enum for fd in file_descriptors() for enum in fd.enum_types_by_name.values()]
    enums += [enum for message in all_messages() for enum in message.enum_types]
    return enums


def message_type(field: FieldDescriptor) -> Descriptor:
    """Return the message type of a message-typed field (failing the test otherwise)."""
    descriptor = field.message_type
    assert descriptor is not None, f"{field.full_name} is not a message field"
    return descriptor


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """Return the enum type of an enum-typed field (failing the test otherwise)."""
    descriptor = field.enum_type
    assert descriptor is not None, f"{field.full_name} is not an enum field"
    return descriptor


def service(full_name: str) -> ServiceDescriptor:
    """Return a service descriptor by full name from its generated module."""
    module_name, _ = SERVICES[full_name]
    descriptor: FileDescriptor = importlib.import_module(module_name).DESCRIPTOR
    return descriptor.services_by_name[full_name.rsplit(".", 1)[1]]


def all_methods() -> dict[str, tuple[Descriptor, Descriptor, bool]]:
    """Map "<service>.<rpc>" to (input message, output message, server streaming)."""
    methods: dict[str, tuple[Descriptor, Descriptor, bool]] = {}
    for full_name in SERVICES:
        for method in service(full_name).methods:
            methods[method.full_name] = (
                method.input_type,
                method.output_type,
                method.server_streaming,
            )
    return methods


def test_generated_code_matches_protos() -> None:
    """scripts/gen_protos.py --check regenerates into a temp dir and finds no difference."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("full_name", sorted(SERVICES))
def test_service_has_exactly_the_designed_rpcs(full_name: str) -> None:
    """Each service exposes exactly the RPCs of DESIGN.md, with <Rpc>Request/<Rpc>Response."""
    _, expected = SERVICES[full_name]
    descriptor = service(full_name)
    assert sorted(m.name for m in descriptor.methods) == sorted(expected)
    package = full_name.rsplit(".", 1)[0]
    for method in descriptor.methods:
        assert method.input_type.full_name == f"{package}.{method.name}Request"
        assert method.output_type.full_name == f"{package}.{method.name}Response"
        assert not method.client_streaming, method.full_name
        assert method.server_streaming == (method.full_name in SERVER_STREAMING), method.full_name


def test_generated_stubs_expose_each_service() -> None:
    """The *_pb2_grpc modules carry a stub, a servicer base and an add_..._to_server function."""
    for full_name, (module_name, _) in SERVICES.items():
        grpc_module = importlib.import_module(f"{module_name}_grpc")
        name = full_name.rsplit(".", 1)[1]
        assert hasattr(grpc_module, f"{name}Stub")
        assert hasattr(grpc_module, f"{name}Servicer")
        assert hasattr(grpc_module, f"add_{name}Servicer_to_server")


def test_every_enum_zero_value_is_unspecified() -> None:
    """Every enum starts with <ENUM_NAME>_UNSPECIFIED = 0."""
    enums = all_enums()
    assert enums
    for enum in enums:
        zero = enum.values_by_number[0]
        assert zero.name.endswith("_UNSPECIFIED"), f"{enum.full_name}: {zero.name}"
        assert enum.values[0].number == 0, enum.full_name


def test_mutating_requests_carry_an_idempotency_key() -> None:
    """Mutating RPCs take `string idempotency_key = 1`; read-only RPCs and webhooks take none."""
    methods = all_methods()
    assert not MUTATING_RPCS - methods.keys(), MUTATING_RPCS - methods.keys()
    for name, (request, _, _) in methods.items():
        field = request.fields_by_name.get("idempotency_key")
        if name in MUTATING_RPCS:
            assert field is not None, f"{name}: {request.full_name} lacks idempotency_key"
            assert field.type == FieldDescriptor.TYPE_STRING, name
            assert field.number == 1, name
            assert not field.is_repeated, name
        else:
            assert field is None, f"{name} is not in MUTATING_RPCS but has idempotency_key"


def test_webhook_requests_carry_the_raw_delivery() -> None:
    """HandleProviderWebhook requests carry provider, raw bytes, headers and URL for signatures."""
    webhooks = {n: m for n, m in all_methods().items() if n.endswith(".HandleProviderWebhook")}
    assert len(webhooks) == 3
    for name, (request, response, _) in webhooks.items():
        webhook = message_type(request.fields_by_name["webhook"])
        assert webhook.full_name == "tickettoken.common.v1.ProviderWebhook", name
        fields = webhook.fields_by_name
        assert fields["provider"].type == FieldDescriptor.TYPE_STRING
        assert fields["payload"].type == FieldDescriptor.TYPE_BYTES
        assert message_type(fields["headers"]).GetOptions().map_entry
        assert fields["url"].type == FieldDescriptor.TYPE_STRING
        assert response.fields_by_name["event_id"].type == FieldDescriptor.TYPE_STRING, name
        status = enum_type(response.fields_by_name["status"])
        assert status.full_name == "tickettoken.common.v1.WebhookStatus", name


def test_no_float_or_double_anywhere() -> None:
    """No message field anywhere is a float or a double (money and rates are integers)."""
    for message in all_messages():
        for field in message.fields:
            assert field.type not in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE), (
                f"{field.full_name} is floating point"
            )


def test_money_is_common_money() -> None:
    """Money fields are tickettoken.common.v1.Money; numeric money-named fields are rates/units."""
    money = importlib.import_module("tickettoken.common.v1.common_pb2").Money.DESCRIPTOR
    assert [(f.name, f.type) for f in money.fields] == [
        ("currency", FieldDescriptor.TYPE_STRING),
        ("amount_minor", FieldDescriptor.TYPE_INT64),
    ]
    money_fields = 0
    for message in all_messages():
        for field in message.fields:
            words = set(field.name.split("_"))
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                target = message_type(field)
                if target.name == "Money":
                    assert target.full_name == MONEY, field.full_name
                    money_fields += 1
                elif words & MONEY_WORDS:
                    assert target.full_name in MONEY_COMPOSITES, (
                        f"{field.full_name} looks like money but is {target.full_name}"
                    )
            elif field.type in NUMERIC_TYPES and words & MONEY_WORDS:
                assert field.name.endswith(NUMERIC_SUFFIXES) or (
                    field.full_name in NUMERIC_NOT_MONEY
                ), f"{field.full_name} looks like money but is not Money"
    assert money_fields >= 20, money_fields


def test_key_amounts_are_money() -> None:
    """The amounts other services compute with are Money (spot check of the central ones)."""
    payment = importlib.import_module("tickettoken.payment.v1.payment_pb2")
    expected = {
        payment.LineItem: ["unit_price"],
        payment.FeeBreakdown: [
            "subtotal",
            "platform_fee",
            "gas_fee_per_ticket",
            "gas_fee",
            "total",
            "venue_payout",
        ],
        payment.TaxBreakdown: ["state_tax", "local_tax", "special_tax", "total_tax"],
        payment.Payment: ["total", "refunded", "refundable"],
        payment.RefundPaymentRequest: ["amount"],
        payment.VenueBalance: ["pending", "available", "reserved", "payable"],
        payment.Payout: ["amount", "fee", "net_amount"],
        payment.RequestPayoutRequest: ["amount"],
    }
    for message_class, names in expected.items():
        for name in names:
            field = message_class.DESCRIPTOR.fields_by_name[name]
            assert message_type(field).full_name == MONEY, field.full_name
    rates = payment.FeeBreakdown.DESCRIPTOR.fields_by_name
    assert rates["platform_fee_bps"].type == FieldDescriptor.TYPE_INT32


def test_list_rpcs_paginate() -> None:
    """List RPCs take page_size/page_token and return next_page_token (ListProviders excepted)."""
    for name, (request, response, _) in all_methods().items():
        rpc = name.rsplit(".", 1)[1]
        if not rpc.startswith("List") or rpc == "ListProviders":
            continue
        fields = request.fields_by_name
        assert fields["page_size"].type == FieldDescriptor.TYPE_INT32, name
        assert fields["page_token"].type == FieldDescriptor.TYPE_STRING, name
        assert response.fields_by_name["next_page_token"].type == FieldDescriptor.TYPE_STRING


def test_times_are_timestamps() -> None:
    """Fields named *_at (and TimeRange bounds) are google.protobuf.Timestamp."""
    for message in all_messages():
        for field in message.fields:
            if field.name.endswith("_at") or field.name == "as_of":
                assert message_type(field).full_name == TIMESTAMP, field.full_name
