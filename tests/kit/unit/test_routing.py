"""The routing kit without I/O: idempotency keys, how a consumer's answer is classified, the
router's settling of an event's routes, and the notification helpers relays share."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from meshkit.context import current_request_id, request_id_var
from meshkit.errors import FieldViolation, NotFound, invalid_argument, to_status_proto
from meshkit.events import EventPublisher
from meshkit.notices import money_text, notification, time_text
from meshkit.outbox import OutboxEvent, Undeliverable
from meshkit.routing import (
    Delivery,
    EventRouter,
    Route,
    RouteFailed,
    describe,
    each,
    idempotency_key,
    refusal,
)
from meshkit.tracing import current_traceparent
from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import events_pb2


def rpc_error(
    code: grpc.StatusCode, message: str = "no", status: status_pb2.Status | None = None
) -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata()
    if status is not None:
        trailers.add("grpc-status-details-bin", status.SerializeToString())
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=message)


def outbox_event(
    event: events_pb2.PaymentFailed | events_pb2.PayoutCreated, traceparent: str = ""
) -> OutboxEvent:
    envelope = EventPublisher("payment").envelope(
        event, aggregate_type="payment", aggregate_id="p-1", event_id=uuid.uuid4()
    )
    envelope.trace.traceparent = traceparent
    return OutboxEvent(
        id=uuid.UUID(envelope.event_id),
        topic=envelope.event_type,
        key="p-1",
        payload=envelope.SerializeToString(),
        type_name=envelope.DESCRIPTOR.full_name,
        headers={},
        attempts=0,
        created_at=datetime.now(UTC),
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def outcomes(registry: CollectorRegistry, relay: str, route: str, outcome: str) -> float:
    return sample(
        registry, "outbox_route_deliveries_total", relay=relay, route=route, outcome=outcome
    )


# -- keys ----------------------------------------------------------------------------------------


def test_keys_are_stable_uuids_distinct_per_route_and_part() -> None:
    event = str(uuid.uuid4())
    key = idempotency_key(event, "nft.revoke_ticket", "t-1")
    assert key == idempotency_key(event, "nft.revoke_ticket", "t-1")
    assert uuid.UUID(key).version == 5
    others = {
        idempotency_key(event, "nft.revoke_ticket", "t-2"),
        idempotency_key(event, "notify.refund_issued", "t-1"),
        idempotency_key(str(uuid.uuid4()), "nft.revoke_ticket", "t-1"),
        idempotency_key(event, "nft.revoke_ticket"),
        # Parts are separated, not concatenated: ("t", "-1") is not ("t-1").
        idempotency_key(event, "nft.revoke_ticket", "t", "-1"),
    }
    assert key not in others and len(others) == 5


def test_a_delivery_derives_its_keys_from_the_envelope_and_route() -> None:
    envelope = common_pb2.EventEnvelope(event_id=str(uuid.uuid4()))
    delivery = Delivery(envelope, "nft.revoke_ticket", attempt=1)
    assert delivery.key("t-1") == idempotency_key(envelope.event_id, "nft.revoke_ticket", "t-1")
    assert Delivery(envelope, "nft.revoke_ticket", attempt=4).key("t-1") == delivery.key("t-1")


# -- classification ------------------------------------------------------------------------------


def test_invalid_argument_and_failed_precondition_are_refusals_with_their_details() -> None:
    status = to_status_proto(
        invalid_argument([FieldViolation("tickets[0].event_name", "must not be empty")]),
        "nft.tickettoken",
    )
    bad = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad request", status)
    reason = refusal(bad)
    assert reason is not None
    assert reason.startswith("INVALID_ARGUMENT")
    assert "tickets[0].event_name: must not be empty" in reason
    locked = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="locked")
    info = error_details_pb2.ErrorInfo(reason="TICKET_REVOKED", domain="nft")
    locked.details.add().Pack(info)
    refused = refusal(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "revoked", locked))
    assert refused == "FAILED_PRECONDITION TICKET_REVOKED: revoked"
    assert refusal(Undeliverable("not an envelope")) == "not an envelope"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INTERNAL,
    ],
)
def test_other_codes_are_retried(code: grpc.StatusCode) -> None:
    assert refusal(rpc_error(code)) is None


def test_other_exceptions_are_retried() -> None:
    assert refusal(NotFound("ticket t-1")) is None
    assert refusal(TimeoutError()) is None
    assert refusal(RuntimeError("bug")) is None


def test_describe_survives_garbage_details() -> None:
    err = grpc.aio.AioRpcError(
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(("grpc-status-details-bin", b"\xff\x00garbage")),
        details="bad",
    )
    assert describe(err).startswith("INVALID_ARGUMENT")


async def test_each_waits_for_every_call_and_raises_the_retryable_failure_first() -> None:
    finished: list[str] = []

    async def call(part: str) -> None:
        await asyncio.sleep(0.01 if part == "slow" else 0)
        finished.append(part)
        if part == "refused":
            raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT)
        if part == "down":
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await each(["refused", "down", "slow"], call)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sorted(finished) == ["down", "refused", "slow"]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await each(["ok", "refused"], call)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    await each([], call)


# -- the router ----------------------------------------------------------------------------------


def failed_event(code: str = "card_declined") -> events_pb2.PaymentFailed:
    return events_pb2.PaymentFailed(payment_id="p-1", failure_code=code)


async def test_routes_run_with_the_event_and_keys_and_count_their_outcomes() -> None:
    registry = CollectorRegistry()
    seen: list[tuple[str, str, str]] = []

    async def tell(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        seen.append((delivery.route, event.payment_id, delivery.key()))

    async def nobody(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        delivery.skip("no contact")

    router = EventRouter(
        [
            Route(events_pb2.PaymentFailed, "tell", tell),
            Route(events_pb2.PaymentFailed, "nobody", nobody),
        ],
        registry=registry,
        relay="payment",
    )
    item = outbox_event(failed_event())
    await router(item)
    assert seen == [("tell", "p-1", idempotency_key(str(item.id), "tell"))]
    assert outcomes(registry, "payment", "tell", "delivered") == 1
    assert outcomes(registry, "payment", "nobody", "skipped") == 1


async def test_an_unrouted_event_is_a_counted_no_op() -> None:
    registry = CollectorRegistry()
    router = EventRouter([], registry=registry, relay="payment")
    await router(outbox_event(events_pb2.PayoutCreated(payout_id="po-1")))
    topic = events_pb2.PayoutCreated.DESCRIPTOR.full_name
    assert sample(registry, "outbox_unrouted_events_total", relay="payment", event_type=topic) == 1


async def test_a_refusal_with_a_retryable_failure_is_retried_alone_it_is_undeliverable() -> None:
    registry = CollectorRegistry()

    async def refused(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "channel off")

    async def flaky(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        if event.failure_code == "down":
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")

    router = EventRouter(
        [
            Route(events_pb2.PaymentFailed, "a", refused),
            Route(events_pb2.PaymentFailed, "b", flaky),
        ],
        registry=registry,
        relay="r",
        max_attempts=5,
    )
    with pytest.raises(RouteFailed, match="b: UNAVAILABLE: connection refused"):
        await router(outbox_event(failed_event("down")))
    with pytest.raises(Undeliverable) as info:
        await router(outbox_event(failed_event()))
    assert info.value.reason == "a: FAILED_PRECONDITION: channel off"
    count = {
        (route, outcome): outcomes(registry, "r", route, outcome)
        for route in "ab"
        for outcome in ("delivered", "failed", "dead_lettered")
    }
    assert count == {
        ("a", "delivered"): 0,
        ("a", "failed"): 1,
        ("a", "dead_lettered"): 1,
        ("b", "delivered"): 1,
        ("b", "failed"): 1,
        ("b", "dead_lettered"): 0,
    }


async def test_a_failure_on_the_last_attempt_counts_as_dead_lettered() -> None:
    registry = CollectorRegistry()

    async def down(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        raise rpc_error(grpc.StatusCode.NOT_FOUND, "ticket not minted yet")

    router = EventRouter(
        [Route(events_pb2.PaymentFailed, "a", down)], registry=registry, relay="r", max_attempts=2
    )
    item = outbox_event(failed_event())
    with pytest.raises(RouteFailed):
        await router(item)
    last = OutboxEvent(**{**{f: getattr(item, f) for f in item.__slots__}, "attempts": 1})
    with pytest.raises(RouteFailed):
        await router(last)
    assert outcomes(registry, "r", "a", "failed") == 1
    assert outcomes(registry, "r", "a", "dead_lettered") == 1


async def test_what_is_not_an_event_envelope_is_undeliverable() -> None:
    router = EventRouter(
        [Route(events_pb2.PaymentFailed, "a", lambda e, d: asyncio.sleep(0))],
        registry=CollectorRegistry(),
    )
    item = outbox_event(failed_event())
    raw = OutboxEvent(
        **{**{f: getattr(item, f) for f in item.__slots__}, "type_name": "google.protobuf.Empty"}
    )
    with pytest.raises(Undeliverable, match="not an event envelope"):
        await router(raw)


def test_a_route_name_is_declared_once() -> None:
    async def act(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        return None

    with pytest.raises(ValueError, match="declared twice"):
        EventRouter(
            [Route(events_pb2.PaymentFailed, "a", act), Route(events_pb2.PaymentFailed, "a", act)],
            registry=CollectorRegistry(),
        )


# -- notices -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "minor", "text"),
    [
        ("USD", 1250, "$12.50"),
        ("USD", 5, "$0.05"),
        ("EUR", 123_456_700, "€1,234,567.00"),
        ("GBP", -999, "-£9.99"),
        ("CHF", 500, "CHF 5.00"),
        ("JPY", 1500, "¥1,500"),
        ("KWD", 1234, "KWD 1.234"),
    ],
)
def test_money_text_uses_integer_minor_units(currency: str, minor: int, text: str) -> None:
    assert money_text(common_pb2.Money(currency=currency, amount_minor=minor)) == text


def test_time_text_in_the_persons_zone_or_utc() -> None:
    when = Timestamp()
    when.FromDatetime(datetime(2026, 5, 2, 1, 0, tzinfo=UTC))
    assert time_text(when, "America/Chicago") == "Fri 1 May 2026, 20:00 CDT"
    assert time_text(when) == "Sat 2 May 2026, 01:00 UTC"
    assert time_text(when, "Not/AZone") == "Sat 2 May 2026, 01:00 UTC"


def test_notification_prefers_email_then_sms_then_nothing() -> None:
    def build(contact: common_pb2.ContactInfo, sms: str = "x_sms") -> object:
        return notification(
            key=str(uuid.uuid4()),
            contact=contact,
            user_id="buyer-1",
            email_template="x",
            sms_template=sms,
            variables={"a": "1"},
            dedup_key="d",
        )

    both = common_pb2.ContactInfo(name="Ada", email="ada@example.com", phone="+16155550100")
    by_email = build(both)
    assert isinstance(by_email, notify_pb2.SendNotificationRequest)
    assert (by_email.channel, by_email.template_id) == (notify_pb2.CHANNEL_EMAIL, "x")
    assert by_email.recipient.user_id == "buyer-1" and by_email.recipient.name == "Ada"
    assert by_email.category == notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL
    by_sms = build(common_pb2.ContactInfo(phone="+16155550100"))
    assert isinstance(by_sms, notify_pb2.SendNotificationRequest)
    assert (by_sms.channel, by_sms.template_id) == (notify_pb2.CHANNEL_SMS, "x_sms")
    assert build(common_pb2.ContactInfo(phone="+16155550100"), sms="") is None
    assert build(common_pb2.ContactInfo(name="Ada")) is None


async def test_routes_run_under_the_events_request_id() -> None:
    seen: list[str | None] = []

    async def act(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        seen.append(current_request_id())

    router = EventRouter([Route(events_pb2.PaymentFailed, "a", act)], registry=CollectorRegistry())
    token = request_id_var.set("rpc-42")
    try:
        caused_by_rpc = outbox_event(failed_event())  # the envelope keeps the RPC's request id
    finally:
        request_id_var.reset(token)
    background = outbox_event(failed_event())
    await router(caused_by_rpc)
    await router(background)
    assert seen == ["rpc-42", str(background.id)]
    assert current_request_id() is None


async def test_routes_continue_the_events_trace() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    seen: list[str | None] = []

    async def act(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        seen.append(current_traceparent())

    router = EventRouter([Route(events_pb2.PaymentFailed, "a", act)], registry=CollectorRegistry())
    traced = outbox_event(failed_event(), traceparent=f"00-{trace_id}-00f067aa0ba902b7-01")
    await router(traced)
    await router(outbox_event(failed_event()))  # no trace stored: a trace of its own
    continued, fresh = seen
    assert continued is not None and fresh is not None
    version, trace, span, flags = continued.split("-")
    # The producer's trace, a span of the relay's own, the producer's sampling decision.
    assert (version, trace, flags) == ("00", trace_id, "01") and span != "00f067aa0ba902b7"
    assert fresh.split("-")[1] not in (trace_id, "0" * 32)
    assert current_traceparent() is None
