"""The outbound gRPC client kit over real channels: retries, throttling, deadline, metadata."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from meshdev.testing.servers import TestTokens
from meshkit.clients import MeshClients
from meshkit.context import ANONYMOUS, CallInfo, call_var, request_id_var
from meshkit.errors import DeadlineExceeded
from tests.kit.apps.kitapp import DEFINITION
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

VALID_TEMPLATE = notify_pb2.Template(
    id="t",
    name="T",
    channel=notify_pb2.CHANNEL_EMAIL,
    category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
)


class Recorder(notify_pb2_grpc.NotifyServiceServicer):
    """A bare server that records what each call carried, and fails on request."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.unavailable_first = 0

    async def RenderTemplate(
        self, request: notify_pb2.RenderTemplateRequest, context: Any
    ) -> notify_pb2.RenderTemplateResponse:
        self.calls.append(
            {
                "metadata": dict(context.invocation_metadata()),
                "time_remaining": context.time_remaining(),
            }
        )
        if request.template_id == "down" or len(self.calls) <= self.unavailable_first:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return notify_pb2.RenderTemplateResponse(subject="ok")


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    server = grpc.aio.server()
    servicer = Recorder()
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def clients(recorder: tuple[Recorder, str]) -> AsyncIterator[MeshClients]:
    mesh = MeshClients(
        targets={"notify": recorder[1]},
        token_for=lambda audience: f"token-for-{audience}",
        default_timeout_s=3.0,
    )
    yield mesh
    await mesh.close()


async def test_unavailable_is_retried_by_the_channel(
    recorder: tuple[Recorder, str], clients: MeshClients
) -> None:
    servicer, _ = recorder
    servicer.unavailable_first = 2
    response = await clients.notify.RenderTemplate(
        notify_pb2.RenderTemplateRequest(template_id="hi")
    )
    assert response.subject == "ok" and len(servicer.calls) == 3


async def test_retry_throttling_stops_retries_when_most_calls_fail(
    recorder: tuple[Recorder, str], clients: MeshClients
) -> None:
    servicer, _ = recorder
    for _ in range(20):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await clients.notify.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="down")
            )
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE
    # Without throttling: 3 attempts each (60). The token bucket (10, ratio 0.1) stops retries.
    assert len(servicer.calls) < 30


async def test_metadata_and_default_deadline_outside_a_call(
    recorder: tuple[Recorder, str], clients: MeshClients
) -> None:
    servicer, _ = recorder
    await clients.notify.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="hi"))
    seen = servicer.calls[-1]
    assert seen["metadata"]["authorization"] == "Bearer token-for-tickettoken.notify"
    assert len(seen["metadata"]["x-request-id"]) == 32
    # grpc-timeout travels rounded to the encoding's precision and the server starts its own
    # clock on receipt: allow a few milliseconds over the 3 s default.
    assert 2.5 < seen["time_remaining"] <= 3.05


async def test_inbound_deadline_and_request_id_are_propagated(
    recorder: tuple[Recorder, str], clients: MeshClients
) -> None:
    servicer, _ = recorder
    rid = request_id_var.set("req-abc")
    call = call_var.set(CallInfo("/svc/M", "req-abc", ANONYMOUS, time.monotonic() + 0.5))
    try:
        await clients.notify.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="hi"))
        seen = servicer.calls[-1]
        assert seen["metadata"]["x-request-id"] == "req-abc"
        assert 0.3 < seen["time_remaining"] <= 0.5
        # An explicit timeout longer than what is left is capped too.
        await clients.notify.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id="hi"), timeout=60
        )
        assert servicer.calls[-1]["time_remaining"] <= 0.5
    finally:
        call_var.reset(call)
        request_id_var.reset(rid)
    # No time left: the call fails locally and nothing is sent.
    call = call_var.set(CallInfo("/svc/M", "req-x", ANONYMOUS, time.monotonic() + 0.01))
    try:
        before = len(servicer.calls)
        with pytest.raises(DeadlineExceeded):
            await clients.notify.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="hi"))
        assert len(servicer.calls) == before
    finally:
        call_var.reset(call)


async def test_a_kit_server_accepts_the_service_token_and_channel_settings(
    app_factory: Any, tokens: TestTokens
) -> None:
    app = await app_factory(DEFINITION)
    mesh = MeshClients(
        targets={"kitapp": f"127.0.0.1:{app.grpc_port}"},
        token_for=lambda audience: tokens.service("payment", aud=audience),
    )
    try:
        stub = mesh.stub("kitapp", notify_pb2_grpc.NotifyServiceStub)
        request = notify_pb2.UpsertTemplateRequest(
            idempotency_key=str(uuid.uuid4()), template=VALID_TEMPLATE
        )
        response = await stub.UpsertTemplate(request)
        assert response.created
    finally:
        await mesh.close()
