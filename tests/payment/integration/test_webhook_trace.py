"""A payment settled by Stripe's webhook (3-D Secure) stays in the trace of the CreatePayment
request that created it: the PaymentIntent carries the request's trace context in its metadata —
the same on a retried create in another trace, so Stripe's idempotent replay sees the same
parameters — and the webhook (an HTTP request with a trace of its own) settles the payment and
announces PaymentSucceeded in that trace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from meshdev.standins.faultproxy import FaultProxy
from tests.payment.integration.support import (
    CREATE_INTENT,
    SUCCEEDED,
    THREE_D_SECURE,
    StartQuiet,
    event_payload,
    sign,
)
from tickettoken.payment.v1 import payment_pb2

P = payment_pb2

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"


def traced(trace_id: str) -> tuple[tuple[str, str], ...]:
    return (("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01"), ("tracestate", "v=1"))


def trace_id_of(value: str) -> str:
    version, trace_id, span_id, _ = value.split("-")
    assert version == "00" and span_id != CALLER_SPAN  # a span of payment's own, in that trace
    return trace_id


async def test_a_3ds_payment_settled_by_webhook_continues_the_create_requests_trace(
    start_quiet: StartQuiet,
    stripe_proxy: FaultProxy,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    client = await start_quiet()
    request = client.create_request(pm=await client.payment_method(THREE_D_SECURE))
    md = client.buyer(request.buyer_id)

    # The first create reaches Stripe in trace A; its answer is lost.
    lost = stripe_proxy.lose_answer(*CREATE_INTENT)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CreatePayment(request, metadata=(*md, *traced(TRACE_A)), timeout=20)
    lost.release()
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    # The client retries in a trace of its own: the intent is created with the same parameters
    # (Stripe's idempotency layer would refuse others), the trace of the payment's creation.
    reply = await client.stub.CreatePayment(request, metadata=(*md, *traced(TRACE_B)), timeout=20)
    payment = reply.payment
    assert payment.status == P.PAYMENT_STATUS_REQUIRES_ACTION
    [intent] = await client.intents_for(payment_id=payment.id)
    assert trace_id_of(intent["metadata"]["traceparent"]) == TRACE_A
    assert intent["metadata"]["tracestate"] == "v=1"

    # 3-D Secure completed on the buyer's device; Stripe's webhook settles it.
    await client.authenticate(payment.provider_payment_id, payment.client_secret)
    intent = await client.intent(payment.provider_payment_id)
    assert intent["status"] == "succeeded"
    body = event_payload("payment_intent.succeeded", intent)
    status, answer = await client.post_webhook(body, sign(body))
    assert status == 200 and answer["status"] == "WEBHOOK_STATUS_PROCESSED"
    assert (await client.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED

    [succeeded] = await client.events(SUCCEEDED)
    assert trace_id_of(succeeded.trace.traceparent) == TRACE_A
    assert succeeded.trace.tracestate == "v=1"
    [settled] = [
        line for line in log_lines() if line["message"] == "payment intent settled by webhook"
    ]
    assert settled["payment_id"] == payment.id and settled["trace_id"] == TRACE_A
    assert settled["applied"] == "CHANGED" and settled["status"] == "SUCCEEDED"


async def test_a_payment_created_without_a_stored_trace_settles_in_the_webhooks(
    start_quiet: StartQuiet, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    client = await start_quiet()
    payment = await client.create(pm=await client.payment_method(THREE_D_SECURE))
    # As if created before traces were kept: nothing stored, nothing in Stripe's metadata.
    await client.fetch(
        "UPDATE payments SET traceparent = NULL, tracestate = NULL WHERE id = $1::uuid", payment.id
    )
    await client.authenticate(payment.provider_payment_id, payment.client_secret)
    intent = await client.intent(payment.provider_payment_id)
    del intent["metadata"]["traceparent"]
    body = event_payload("payment_intent.succeeded", intent)
    status, _ = await client.post_webhook(body, sign(body))
    assert status == 200
    [succeeded] = await client.events(SUCCEEDED)
    [settled] = [
        line for line in log_lines() if line["message"] == "payment intent settled by webhook"
    ]
    # The delivery's own trace (a new one: Stripe sends no traceparent).
    assert succeeded.trace.traceparent.split("-")[1] == settled["trace_id"]
