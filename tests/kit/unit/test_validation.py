"""The generic input guard and the tolerant deserializer (meshkit.validation), without I/O.

The contract rules themselves (protovalidate annotations) are exercised through the services'
RPCs and the property-based bad-input test; here: what no rule says.
"""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from meshkit.errors import InvalidArgument
from meshkit.validation import (
    Limits,
    RequestValidator,
    Undecodable,
    _Planner,
    tolerant_deserializer,
)
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import nft_pb2
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import payment_pb2


def fields(validator: RequestValidator, message: object) -> list[tuple[str, str]]:
    return [(v.field, v.reason) for v in validator.violations(message)]  # type: ignore[arg-type]


def test_nul_characters_anywhere_are_named_by_path() -> None:
    request = payment_pb2.ListPaymentsRequest(buyer_id="a\x00b")
    request.statuses.append(payment_pb2.PAYMENT_STATUS_PENDING)
    assert fields(RequestValidator(), request) == [("buyer_id", "string.no_nul")]

    nested = payment_pb2.CalculateFeesRequest(venue_id="v1", currency="USD")
    nested.line_items.add(ticket_type_id="ga", quantity=1, section="A")
    nested.line_items.add(ticket_type_id="ga", quantity=1, section="B\x00")
    nested.line_items[1].ticket_ids.extend(["t1", "\x00"])
    assert fields(RequestValidator(), nested) == [
        ("line_items[1].section", "string.no_nul"),
        ("line_items[1].ticket_ids[1]", "string.no_nul"),
    ]


def test_map_keys_and_values_are_checked() -> None:
    request = notify_pb2.RenderTemplateRequest(
        template_id="t", variables={"ok": "fine", "bad": "x\x00", "k\x00": "v"}
    )
    found = fields(RequestValidator(), request)
    assert ('variables["bad"]', "string.no_nul") in found
    assert ("variables", "string.no_nul") in found  # a bad key names the map
    assert len(found) == 2


def test_timestamps_and_durations_out_of_range() -> None:
    request = payment_pb2.ListPaymentsRequest()
    request.created.start.seconds = 253_402_300_800  # 10000-01-01
    request.created.end.nanos = -1
    assert fields(RequestValidator(), request) == [
        ("created.start", "timestamp.valid"),
        ("created.end", "timestamp.valid"),
    ]
    fine = payment_pb2.ListPaymentsRequest()
    fine.created.start.seconds = -62_135_596_800  # 0001-01-01, the lowest valid instant
    fine.created.end.seconds = 253_402_300_799
    fine.created.end.nanos = 999_999_999
    assert RequestValidator().violations(fine) == []


def test_global_maxima_for_strings_bytes_and_repeated_fields() -> None:
    validator = RequestValidator(Limits(max_string_chars=5, max_bytes=4, max_items=2))
    assert fields(validator, payment_pb2.GetPaymentRequest(payment_id="123456")) == [
        ("payment_id", "string.max_len")
    ]
    webhook = payment_pb2.HandleProviderWebhookRequest(
        webhook=common_pb2.ProviderWebhook(provider="s", payload=b"12345")
    )
    assert fields(validator, webhook) == [("webhook.payload", "bytes.max_len")]
    listing = payment_pb2.ListPaymentsRequest()
    listing.statuses.extend([1, 2, 3])
    assert fields(validator, listing) == [("statuses", "repeated.max_items")]


def test_a_message_type_with_nothing_to_guard_is_planned_as_nothing() -> None:
    planner = _Planner()
    assert planner.plan(nft_pb2.GetMintingWalletRequest.DESCRIPTOR) is None
    money = planner.plan(common_pb2.Money.DESCRIPTOR)
    assert money is not None and [s.field.name for s in money.values()] == ["currency"]


def test_check_raises_invalid_argument_with_every_violation() -> None:
    request = payment_pb2.ListPaymentsRequest(buyer_id="\x00", venue_id="\x00")
    with pytest.raises(InvalidArgument) as info:
        RequestValidator().check(request)
    assert info.value.reason == "INVALID_REQUEST"
    assert [v.field for v in info.value.field_violations] == ["buyer_id", "venue_id"]
    assert "buyer_id: must not contain NUL characters" in info.value.message


def test_undecodable_bytes_become_an_invalid_argument_not_an_exception() -> None:
    parse = tolerant_deserializer(
        payment_pb2.GetPaymentRequest.FromString, "tickettoken.payment.v1.GetPaymentRequest"
    )
    assert parse(payment_pb2.GetPaymentRequest(payment_id="p").SerializeToString()).payment_id
    for data in (
        b"\x0a\xff\xff\xff\xff\x0f",  # field 1 with a length far past the end
        b"\x0a\x02\xff\xfe",  # field 1 (a string) holding invalid UTF-8
    ):
        broken = parse(data)
        assert isinstance(broken, Undecodable)
        [violation] = RequestValidator().violations(broken)
        assert violation.reason == "request.decode"
        assert "GetPaymentRequest" in violation.description


def test_the_answer_to_huge_bad_input_stays_small_enough_for_trailers() -> None:
    """Trailing metadata over 8 KiB is refused by clients, who would then see
    RESOURCE_EXHAUSTED instead of the field violations."""
    from meshkit.errors import MAX_VIOLATIONS, to_status_proto

    request = notify_pb2.RenderTemplateRequest(
        template_id="t", variables={"k" * 50_000 + str(i): "\x00" for i in range(30)}
    )
    with pytest.raises(InvalidArgument) as info:
        RequestValidator().check(request)
    assert len(info.value.field_violations) == 30
    status = to_status_proto(info.value, "tickettoken.test")
    assert len(status.SerializeToString()) < 6_000
    bad = error_details_pb2.BadRequest()
    status.details[1].Unpack(bad)
    assert len(bad.field_violations) == MAX_VIOLATIONS
    assert all(len(v.field) <= 128 for v in bad.field_violations)
    assert bad.field_violations[0].field.startswith('variables["kkk')


def test_small_clean_requests_are_vouched_for_and_the_rest_are_walked() -> None:
    from meshkit.validation import _vouched

    validator = RequestValidator()
    assert validator.can_vouch(notify_pb2.RenderTemplateRequest.DESCRIPTOR)
    assert not validator.can_vouch(payment_pb2.ListPaymentsRequest.DESCRIPTOR)  # timestamps
    assert not RequestValidator(Limits(max_items=10)).can_vouch(
        notify_pb2.RenderTemplateRequest.DESCRIPTOR
    )
    parse = tolerant_deserializer(
        notify_pb2.RenderTemplateRequest.FromString, "RenderTemplateRequest", vouch=True
    )
    clean = parse(notify_pb2.RenderTemplateRequest(template_id="t").SerializeToString())
    assert _vouched.get() is clean
    # A NUL character is a zero byte on the wire: never vouched for, always walked.
    nul = parse(notify_pb2.RenderTemplateRequest(template_id="t\x00").SerializeToString())
    assert _vouched.get() is not nul
    assert [v.reason for v in validator.violations(nul)] == ["string.no_nul"]
    big = parse(
        notify_pb2.RenderTemplateRequest(
            template_id="t", variables={str(i): "v" for i in range(300)}
        ).SerializeToString()
    )
    assert _vouched.get() is not big  # over 1,000 bytes: walked
