"""Contract tests for the v1 protos and the generated ``tickettoken`` package.

They prove the committed generated code matches protos/, that each service has exactly the RPCs
DESIGN.md lists, and the API-wide rules: ``*_UNSPECIFIED`` enum zero values, an idempotency key on
every mutating request, Money for money and never a float, pagination and timestamp conventions.

Input rules (protovalidate ``buf.validate`` annotations, enforced by the kit before any handler
runs): every request declares some, idempotency keys are required UUIDs, list RPCs bound their
page size, and the rules accept the requests the services and their tests send. Events: each one
a message of its own in ``events.proto`` (never an RPC message), with its aggregate's id and a
timestamp, published in ``tickettoken.common.v1.EventEnvelope``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import protovalidate
import pytest
from buf.validate import validate_pb2
from google.protobuf import message as pb_message
from google.protobuf.descriptor import (
    Descriptor,
    EnumDescriptor,
    FieldDescriptor,
    FileDescriptor,
    ServiceDescriptor,
)

from tests.contracts.examples import valid_requests

ROOT = Path(__file__).resolve().parents[2]

# Every generated message module of the contracts package.
PB2_MODULES = (
    "tickettoken.common.v1.common_pb2",
    "tickettoken.payment.v1.payment_pb2",
    "tickettoken.payment.v1.events_pb2",
    "tickettoken.nft.v1.nft_pb2",
    "tickettoken.nft.v1.events_pb2",
    "tickettoken.notify.v1.notify_pb2",
    "tickettoken.notify.v1.events_pb2",
    "tickettoken.integration.v1.integration_pb2",
)

# The event modules: every message in them is an event (or a part of one), never an RPC message.
EVENT_MODULES = (
    "tickettoken.payment.v1.events_pb2",
    "tickettoken.nft.v1.events_pb2",
    "tickettoken.notify.v1.events_pb2",
)

# Every event: (field holding its aggregate's id, field holding when it happened).
EVENTS: dict[str, tuple[str, str]] = {
    "tickettoken.payment.v1.PaymentSucceeded": ("payment_id", "succeeded_at"),
    "tickettoken.payment.v1.PaymentFailed": ("payment_id", "failed_at"),
    "tickettoken.payment.v1.PaymentRefunded": ("payment_id", "refunded_at"),
    "tickettoken.payment.v1.PayoutCreated": ("payout_id", "created_at"),
    "tickettoken.nft.v1.TicketMinted": ("ticket_id", "minted_at"),
    "tickettoken.nft.v1.MintFailed": ("ticket_id", "failed_at"),
    "tickettoken.nft.v1.TicketTransferred": ("ticket_id", "transferred_at"),
    "tickettoken.nft.v1.TicketRevoked": ("ticket_id", "revoked_at"),
    "tickettoken.notify.v1.NotificationSent": ("notification_id", "sent_at"),
    "tickettoken.notify.v1.NotificationDelivered": ("notification_id", "delivered_at"),
    "tickettoken.notify.v1.NotificationFailed": ("notification_id", "failed_at"),
}
# Messages of the event files that are parts of events, not events themselves.
EVENT_PARTS = {"tickettoken.payment.v1.TicketLine"}

# Request messages that declare no input rule, and why.
RULE_FREE_REQUESTS = {
    "tickettoken.nft.v1.GetMintingWalletRequest": "empty: reads the platform's wallet",
    "tickettoken.integration.v1.ListProvidersRequest": "empty: lists the supported providers",
}

# Largest page_size each list RPC documents ("maximum N" in its request's comment).
PAGE_SIZE_MAX = {
    "tickettoken.payment.v1.PaymentService.ListPayments": 500,
    "tickettoken.nft.v1.NftService.ListTicketNfts": 500,
    "tickettoken.notify.v1.NotifyService.ListNotifications": 500,
    "tickettoken.integration.v1.IntegrationService.ListConnections": 500,
    "tickettoken.integration.v1.IntegrationService.ListSyncLogs": 1000,
    "tickettoken.integration.v1.IntegrationService.ListDeadLetters": 500,
}

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
            # issue 14 extends the contract: the sync engine's ingest and schedule RPCs.
            "IngestCatalog",
            "IngestInventory",
            "RecordTransaction",
            "SetSyncSchedule",
            "GetSyncSchedule",
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
    "tickettoken.integration.v1.IntegrationService.IngestCatalog",
    "tickettoken.integration.v1.IntegrationService.IngestInventory",
    "tickettoken.integration.v1.IntegrationService.RecordTransaction",
    "tickettoken.integration.v1.IntegrationService.SetSyncSchedule",
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
                elif words & MONEY_WORDS and not field.name.endswith("_at"):  # e.g. refunded_at
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


# ---------------------------------------------------------------------------------------------
# Input rules (protovalidate)


def field_rules(field: FieldDescriptor) -> validate_pb2.FieldRules | None:
    """The field's `(buf.validate.field)` rules, or None when it declares none."""
    options = field.GetOptions()
    if not options.HasExtension(validate_pb2.field):
        return None
    rules: validate_pb2.FieldRules = options.Extensions[validate_pb2.field]
    return rules


def declares_rules(message: Descriptor) -> bool:
    """True when the message, one of its oneofs or one of its fields declares a rule."""
    if message.GetOptions().HasExtension(validate_pb2.message):
        return True
    if any(o.GetOptions().HasExtension(validate_pb2.oneof) for o in message.oneofs):
        return True
    return any(field_rules(f) is not None for f in message.fields)


def request_types() -> dict[str, Descriptor]:
    """Map "<service>.<rpc>" to its request message."""
    return {name: request for name, (request, _, _) in all_methods().items()}


def _pb2_name(descriptor: Descriptor) -> str:
    return descriptor.file.name[: -len(".proto")].replace("/", ".") + "_pb2"


def message_class(descriptor: Descriptor) -> type[pb_message.Message]:
    """The generated class of a top-level message type."""
    cls: type[pb_message.Message] = getattr(
        importlib.import_module(_pb2_name(descriptor)), descriptor.name
    )
    return cls


def violations(msg: pb_message.Message) -> set[tuple[str, str]]:
    """(field path, rule id) of every protovalidate violation of msg; paths like `a[0].b`."""
    found = set()
    for violation in protovalidate.collect_violations(msg):
        parts = []
        path = violation.proto.field
        for element in path.elements if path is not None else ():
            part = element.field_name
            subscript = getattr(element, "subscript", None)
            if subscript is not None:
                part += f"[{subscript.value}]"
            parts.append(part)
        found.add((".".join(parts), violation.proto.rule_id))
    return found


def test_mutating_requests_require_a_uuid_idempotency_key() -> None:
    """Every idempotency_key is declared required and a UUID (client-generated)."""
    for name in sorted(MUTATING_RPCS):
        field = request_types()[name].fields_by_name["idempotency_key"]
        rules = field_rules(field)
        assert rules is not None, f"{name}: idempotency_key declares no rule"
        assert rules.required, f"{name}: idempotency_key is not required"
        assert rules.string.uuid, f"{name}: idempotency_key is not declared a UUID"


def test_every_request_declares_input_rules() -> None:
    """Each RPC's request declares at least one rule, or is listed as rule-free with a reason."""
    requests = {request.full_name: request for request in request_types().values()}
    assert not RULE_FREE_REQUESTS.keys() - requests.keys(), "stale RULE_FREE_REQUESTS entry"
    for full_name, request in sorted(requests.items()):
        if full_name in RULE_FREE_REQUESTS:
            assert not request.fields, f"{full_name} is listed as rule-free but has fields"
            continue
        assert declares_rules(request), f"{full_name} declares no input rule"


def test_rules_compile_for_every_request() -> None:
    """protovalidate compiles the rules of every request (and the messages inside it)."""
    for name, request in request_types().items():
        found = violations(message_class(request)())
        if request.full_name in RULE_FREE_REQUESTS:
            assert not found, name


def test_list_rpcs_declare_page_size_not_negative() -> None:
    """page_size is declared >= 0 (0 = the service's default); a value above the documented
    maximum is lowered to it by the service (AIP-158), not refused."""
    listed = {
        name
        for name in all_methods()
        if name.rsplit(".", 1)[1].startswith("List") and not name.endswith(".ListProviders")
    }
    assert listed == PAGE_SIZE_MAX.keys()
    for name, maximum in PAGE_SIZE_MAX.items():
        rules = field_rules(request_types()[name].fields_by_name["page_size"])
        assert rules is not None, f"{name}: page_size declares no rule"
        assert rules.int32.HasField("gte") and rules.int32.gte == 0, name
        assert not rules.int32.HasField("lte"), f"{name}: page_size above {maximum} is lowered"


def test_enum_rules_are_defined_only() -> None:
    """Every enum rule in a request also refuses numbers the enum does not define."""
    seen: set[str] = set()

    def visit(message: Descriptor) -> None:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        for field in message.fields:
            rules = field_rules(field)
            if field.type == FieldDescriptor.TYPE_ENUM:
                enum_rules = None
                if rules is not None:
                    enum_rules = rules.repeated.items.enum if field.is_repeated else rules.enum
                assert enum_rules is not None and enum_rules.defined_only, (
                    f"{field.full_name}: enum without defined_only"
                )
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target = message_type(field)
                if (
                    target.full_name.startswith("tickettoken.")
                    and not target.GetOptions().map_entry
                ):
                    visit(target)

    for request in request_types().values():
        visit(request)


def test_rules_accept_what_the_services_accept() -> None:
    """Well-formed requests like the ones the services' tests send raise no violation."""
    for request in valid_requests():
        assert violations(request) == set(), (request.DESCRIPTOR.full_name, request)


def test_rules_refuse_bad_input_with_field_paths() -> None:
    """Spot checks: bad input is refused with the path of the offending field."""
    from tickettoken.common.v1 import common_pb2 as c
    from tickettoken.nft.v1 import nft_pb2 as n
    from tickettoken.payment.v1 import payment_pb2 as p

    create = p.CreatePaymentRequest(
        idempotency_key="not-a-uuid",
        order_id="",
        venue_id="v" * 129,
        event_id="event\x07",
        buyer_id="buyer-1",
        line_items=[p.LineItem(ticket_type_id="ga", quantity=0)],
        currency="usd",
        payment_method_id="pm_card_visa",
        buyer_contact=c.ContactInfo(email="nope", phone="0155"),
        metadata={f"k{i}": "v" for i in range(21)},
    )
    assert {path for path, _ in violations(create)} == {
        "idempotency_key",
        "order_id",
        "venue_id",
        "event_id",
        "line_items[0].unit_price",
        "line_items[0].quantity",
        "currency",
        "buyer_contact.email",
        "buyer_contact.phone",
        "metadata",
    }
    listing = p.ListPaymentsRequest(page_size=-1, statuses=[p.PAYMENT_STATUS_UNSPECIFIED])
    assert {path for path, _ in violations(listing)} == {"page_size", "statuses[0]"}
    mint = n.MintTicketsRequest(
        idempotency_key="0b6a4f5e-9a7b-4c1d-8e2f-3a4b5c6d7e8f",
        order_id="o",
        event_id="e",
        venue_id="v",
        buyer_id="b",
        tickets=[n.TicketToMint(ticket_id="t", owner_wallet="0OIl", event_name="x" * 49)],
    )
    assert {path for path, _ in violations(mint)} == {
        "payment_id",
        "tickets[0].owner_wallet",
        "tickets[0].event_name",
        "tickets[0].venue_name",
        "tickets[0].event_starts_at",
        "tickets[0].ticket_type",
    }
    assert violations(n.GetMintJobRequest()) == {("lookup", "required")}
    webhook = p.HandleProviderWebhookRequest(webhook=c.ProviderWebhook(provider="square"))
    assert violations(webhook) == {("webhook", "webhook.provider_stripe")}


# ---------------------------------------------------------------------------------------------
# Events


def event_messages() -> dict[str, Descriptor]:
    """Every top-level message of the event files."""
    found: dict[str, Descriptor] = {}
    for name in EVENT_MODULES:
        descriptor: FileDescriptor = importlib.import_module(name).DESCRIPTOR
        assert descriptor.name.endswith("/events.proto"), descriptor.name
        assert not descriptor.services_by_name, f"{descriptor.name} must define no service"
        found.update({m.full_name: m for m in descriptor.message_types_by_name.values()})
    return found


def test_event_files_hold_exactly_the_events() -> None:
    """The events files define the designed events (and their parts), nothing else."""
    assert set(event_messages()) == EVENTS.keys() | EVENT_PARTS


@pytest.mark.parametrize("full_name", sorted(EVENTS))
def test_event_carries_its_aggregate_id_and_a_timestamp(full_name: str) -> None:
    """Each event leads with its aggregate's id (a string) and says when it happened."""
    event = event_messages()[full_name]
    id_field, time_field = EVENTS[full_name]
    aggregate_id = event.fields_by_name[id_field]
    assert aggregate_id.number == 1, f"{full_name}: {id_field} is not field 1"
    assert aggregate_id.type == FieldDescriptor.TYPE_STRING, full_name
    assert message_type(event.fields_by_name[time_field]).full_name == TIMESTAMP, full_name


def test_events_are_not_rpc_messages() -> None:
    """No RPC takes or returns an event, and no event embeds an RPC request or response."""
    events = event_messages()
    for name, (request, response, _) in all_methods().items():
        assert request.full_name not in events and response.full_name not in events, name
    rpc_messages = {m.full_name for r, s, _ in all_methods().values() for m in (r, s)}
    for event in events.values():
        for field in event.fields:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                assert message_type(field).full_name not in rpc_messages, field.full_name


def test_events_that_reach_the_buyer_carry_the_contact() -> None:
    """Events notify acts on carry the buyer's contact; MintTickets carries it to nft."""
    contact = "tickettoken.common.v1.ContactInfo"
    events = event_messages()
    for name in (
        "tickettoken.payment.v1.PaymentSucceeded",
        "tickettoken.payment.v1.PaymentFailed",
        "tickettoken.payment.v1.PaymentRefunded",
        "tickettoken.nft.v1.TicketMinted",
        "tickettoken.nft.v1.MintFailed",
    ):
        assert message_type(events[name].fields_by_name["buyer_contact"]).full_name == contact
    mint = request_types()["tickettoken.nft.v1.NftService.MintTickets"]
    field = mint.fields_by_name["buyer_contact"]
    assert (field.number, message_type(field).full_name) == (9, contact)


def test_event_envelope() -> None:
    """EventEnvelope has the designed fields, numbers and types."""
    common = importlib.import_module("tickettoken.common.v1.common_pb2")
    envelope: Descriptor = common.EventEnvelope.DESCRIPTOR
    string = FieldDescriptor.TYPE_STRING
    expected = [
        ("event_id", 1, string),
        ("event_type", 2, string),
        ("producer", 3, string),
        ("aggregate_type", 4, string),
        ("aggregate_id", 5, string),
        ("occurred_at", 6, TIMESTAMP),
        ("schema_version", 7, FieldDescriptor.TYPE_INT32),
        ("trace", 8, "tickettoken.common.v1.TraceContext"),
        ("request_id", 9, string),
        ("payload", 10, "google.protobuf.Any"),
    ]
    actual = [
        (
            f.name,
            f.number,
            message_type(f).full_name if f.type == FieldDescriptor.TYPE_MESSAGE else f.type,
        )
        for f in envelope.fields
    ]
    assert actual == expected
    trace: Descriptor = common.TraceContext.DESCRIPTOR
    assert [(f.name, f.number, f.type) for f in trace.fields] == [
        ("traceparent", 1, string),
        ("tracestate", 2, string),
    ]
    # The payload names its event type: an event packs into and out of the envelope.
    events = importlib.import_module("tickettoken.payment.v1.events_pb2")
    packed = common.EventEnvelope(event_type="tickettoken.payment.v1.PaymentSucceeded")
    packed.payload.Pack(events.PaymentSucceeded(payment_id="p"))
    assert packed.payload.TypeName() == packed.event_type
    unpacked = events.PaymentSucceeded()
    assert packed.payload.Unpack(unpacked) and unpacked.payment_id == "p"
