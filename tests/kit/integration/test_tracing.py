"""One trace across services: W3C traceparent through the kit's layer, clients, outbox and logs.

Two in-process kit servers on port 0, A → B: A's handler calls B through `kit.clients`
(MeshClients, a real service token) and, when asked, stages an outbox event that A's own relay
delivers to B under `continue_trace`. B records what arrived. Access-log and structured log
lines are read back as JSON; with the `otlp` exporter, spans are received by a small local
OTLP/HTTP server that decodes them with opentelemetry-proto.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from meshdev.testing.servers import TestTokens, channel_for, running_app
from meshkit.auth import Policy, allow
from meshkit.clients import MeshClients
from meshkit.events import envelope_of
from meshkit.migrations import MigrationSource
from meshkit.outbox import OutboxEvent
from meshkit.server import App, Kit, ServiceDefinition, ServiceRegistration
from meshkit.settings import KitSettings
from meshkit.tracing import continue_trace, current_traceparent
from tickettoken.common.v1 import common_pb2
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc
from tickettoken.payment.v1 import events_pb2 as payment_events

SERVICE = notify_pb2.DESCRIPTOR.services_by_name["NotifyService"]
MIGRATIONS = Path(__file__).resolve().parents[1] / "apps" / "kitapp_migrations"  # a no-op
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
_log = logging.getLogger("tests.tracing")


def parts(traceparent: str) -> tuple[str, str, str]:
    """(trace id, span id, flags) of a version-00 traceparent."""
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16
    assert int(trace_id, 16) != 0 and int(span_id, 16) != 0
    return trace_id, span_id, flags


@dataclass
class Seen:
    """What one handler saw: the traceparent it was called with and its own (current) one."""

    inbound: str | None
    current: str


@dataclass
class Recorder:
    seen: dict[str, list[Seen]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class TraceServicer(notify_pb2_grpc.NotifyServiceServicer):
    """RenderTemplate records the trace it runs in; A's also calls B (and may stage an event)."""

    def __init__(self, kit: Kit, recorder: Recorder, *, forward: bool) -> None:
        self.kit = kit
        self.recorder = recorder
        self.forward = forward

    async def RenderTemplate(
        self, request: notify_pb2.RenderTemplateRequest, context: Any
    ) -> notify_pb2.RenderTemplateResponse:
        inbound = dict(context.invocation_metadata() or ()).get("traceparent")
        current = current_traceparent()
        assert current is not None
        self.recorder.seen.setdefault(request.template_id, []).append(Seen(inbound, current))
        self.recorder.arrived.set()
        if not self.forward:
            return notify_pb2.RenderTemplateResponse(subject="from b")
        _log.info("calling b", extra={"template": request.template_id})
        reply = await self.kit.clients.notify.RenderTemplate(
            notify_pb2.RenderTemplateRequest(template_id=request.template_id)
        )
        if request.template_id == "publish":
            async with self.kit.db.transaction() as conn:
                await self.kit.events.publish(
                    conn,
                    payment_events.PaymentSucceeded(payment_id="p1", order_id="o1"),
                    aggregate_type="payment",
                    aggregate_id="p1",
                )
        return reply


class ASettings(KitSettings):
    service_name: ClassVar[str] = "tracea"


class BSettings(KitSettings):
    service_name: ClassVar[str] = "traceb"


def definition(
    settings_cls: type[KitSettings], recorder: Recorder, *, forward: bool, relay: bool = False
) -> ServiceDefinition:
    policy: Policy = {m.name: allow("admin", services=["tracea"]) for m in SERVICE.methods}

    async def build(kit: Kit) -> Sequence[ServiceRegistration]:
        if relay:

            async def deliver(item: OutboxEvent) -> None:
                # What a relay does: deliver the event under the trace it was staged in.
                envelope = envelope_of(item)
                with continue_trace(
                    envelope.trace.traceparent,
                    envelope.trace.tracestate,
                    name=f"deliver {envelope.event_type}",
                ):
                    await kit.clients.notify.RenderTemplate(
                        notify_pb2.RenderTemplateRequest(template_id="delivered")
                    )

            kit.add_outbox_relay(deliver, poll_interval=0.05)
        servicer = TraceServicer(kit, recorder, forward=forward)  # type: ignore[abstract]
        if forward:

            async def hook(request: web.Request) -> web.Response:
                # A provider's webhook on the public HTTP port, calling the mesh.
                _log.info("webhook")
                await kit.clients.notify.RenderTemplate(
                    notify_pb2.RenderTemplateRequest(template_id="hook")
                )
                return web.json_response({"traceparent": current_traceparent()})

            kit.add_http_route("POST", "/hook", hook)
        return [ServiceRegistration(SERVICE, _add, servicer, policy)]

    return ServiceDefinition(
        settings_cls, MigrationSource(settings_cls.service_name, MIGRATIONS), build
    )


def _add(servicer: Any, server: Any) -> None:
    notify_pb2_grpc.add_NotifyServiceServicer_to_server(servicer, server)


@dataclass
class Mesh:
    a: App
    b: App
    a_seen: Recorder
    b_seen: Recorder
    tokens: TestTokens

    async def call_a(
        self, template_id: str, metadata: tuple[tuple[str, str], ...] = ()
    ) -> notify_pb2.RenderTemplateResponse:
        token = self.tokens.user("admin-1", ["admin"], aud="tickettoken.tracea")
        async with channel_for(self.a) as channel:
            stub = notify_pb2_grpc.NotifyServiceStub(channel)
            return await stub.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id=template_id),
                metadata=(*self.tokens.metadata(token), *metadata),
                timeout=10,
            )

    def access_lines(
        self, log_lines: Callable[[], list[dict[str, Any]]]
    ) -> dict[str, list[dict[str, Any]]]:
        """Each service's access-log lines so far."""
        for app in (self.a, self.b):
            assert app.access_log is not None
            app.access_log.flush()
        found: dict[str, list[dict[str, Any]]] = {"tracea": [], "traceb": []}
        for line in log_lines():
            if line.get("logger") == "meshkit.access" and line["service"] in found:
                found[line["service"]].append(line)
        return found


async def start_mesh(
    app_factory: Any, tokens: TestTokens, *, relay: bool = False, **overrides: Any
) -> Mesh:
    a_seen, b_seen = Recorder(), Recorder()
    b = await app_factory(
        definition(BSettings, b_seen, forward=False), jwt_audience="tickettoken.notify", **overrides
    )
    a = await app_factory(
        definition(ASettings, a_seen, forward=True, relay=relay),
        notify_grpc_target=f"127.0.0.1:{b.grpc_port}",
        **overrides,
    )
    return Mesh(a, b, a_seen, b_seen, tokens)


@pytest.fixture
async def mesh(app_factory: Any, tokens: TestTokens) -> Mesh:
    return await start_mesh(app_factory, tokens, relay=True)


# ---------------------------------------------------------------------------------------------


async def test_b_continues_the_trace_a_was_called_with(
    mesh: Mesh, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    await mesh.call_a("hop", (("traceparent", TRACEPARENT), ("tracestate", "vendor=x")))
    [at_a] = mesh.a_seen.seen["hop"]
    [at_b] = mesh.b_seen.seen["hop"]
    assert at_a.inbound == TRACEPARENT
    a_trace, a_span, a_flags = parts(at_a.current)
    assert (a_trace, a_flags) == (TRACE_ID, "01") and a_span != CALLER_SPAN  # A's own span
    # B was called with A's span as parent, and runs in a span of its own in the same trace.
    assert at_b.inbound == at_a.current
    b_trace, b_span, _ = parts(at_b.current)
    assert b_trace == TRACE_ID and b_span not in (a_span, CALLER_SPAN)

    access = mesh.access_lines(log_lines)
    [a_line] = access["tracea"]
    [b_line] = access["traceb"]
    assert a_line["grpc_code"] == b_line["grpc_code"] == "OK"
    assert a_line["trace_id"] == b_line["trace_id"] == TRACE_ID
    assert (a_line["span_id"], b_line["span_id"]) == (a_span, b_span)
    # The handler's own log line carries the trace too.
    [handler_line] = [line for line in log_lines() if line.get("message") == "calling b"]
    assert handler_line["trace_id"] == TRACE_ID and handler_line["span_id"] == a_span


async def test_a_call_without_traceparent_starts_a_new_trace(
    mesh: Mesh, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    await mesh.call_a("fresh")
    await mesh.call_a("fresh")
    first, second = mesh.a_seen.seen["fresh"]
    assert first.inbound is None
    trace_ids = [parts(seen.current)[0] for seen in (first, second)]
    assert trace_ids[0] != trace_ids[1]  # each call its own trace
    assert [parts(seen.current)[0] for seen in mesh.b_seen.seen["fresh"]] == trace_ids
    access = mesh.access_lines(log_lines)
    assert [line["trace_id"] for line in access["tracea"]] == trace_ids
    assert [line["trace_id"] for line in access["traceb"]] == trace_ids


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        f"00-{'0' * 32}-{CALLER_SPAN}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{CALLER_SPAN}-01",  # forbidden version
        f"00-{TRACE_ID.upper()}-{CALLER_SPAN}-01",  # upper-case hex
        f"00-{TRACE_ID}-{CALLER_SPAN}-01-extra",  # version 00 has exactly four fields
    ],
)
async def test_an_invalid_traceparent_starts_a_new_trace_without_error(
    mesh: Mesh, log_lines: Callable[[], list[dict[str, Any]]], bad: str
) -> None:
    reply = await mesh.call_a("bad", (("traceparent", bad), ("tracestate", "vendor=x")))
    assert reply.subject == "from b"
    [at_a] = mesh.a_seen.seen["bad"]
    trace_id, _, _ = parts(at_a.current)
    assert trace_id != TRACE_ID
    assert parts(mesh.b_seen.seen["bad"][0].current)[0] == trace_id
    [a_line] = mesh.access_lines(log_lines)["tracea"]
    assert a_line["trace_id"] == trace_id and a_line["grpc_code"] == "OK"


async def test_a_refused_call_is_logged_with_its_trace(
    mesh: Mesh, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    async with channel_for(mesh.a) as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="x"),
                metadata=(("traceparent", TRACEPARENT),),  # no token
            )
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    [a_line] = mesh.access_lines(log_lines)["tracea"]
    assert a_line["grpc_code"] == "UNAUTHENTICATED" and a_line["trace_id"] == TRACE_ID


async def test_an_event_staged_in_a_handler_keeps_the_trace_and_its_relay_continues_it(
    mesh: Mesh, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    await mesh.call_a("publish", (("traceparent", TRACEPARENT), ("tracestate", "vendor=x")))
    [at_a] = mesh.a_seen.seen["publish"]
    [row] = await mesh.a.kit.db.fetch("SELECT payload, headers FROM outbox")  # type: ignore[union-attr]
    envelope = common_pb2.EventEnvelope.FromString(row["payload"])
    # The event carries A's span (the request's trace, A's span id), not the caller's.
    assert envelope.trace.traceparent == at_a.current
    assert envelope.trace.tracestate == "vendor=x"
    headers = json.loads(row["headers"])
    assert headers["traceparent"] == at_a.current and headers["tracestate"] == "vendor=x"

    # A's relay delivers it to B under continue_trace: same trace, a span of its own.
    await asyncio.wait_for(_until(lambda: "delivered" in mesh.b_seen.seen), timeout=30)
    [delivered] = mesh.b_seen.seen["delivered"]
    relay_trace, relay_span, _ = parts(delivered.inbound or "")
    assert relay_trace == TRACE_ID and relay_span != parts(at_a.current)[1]
    b_trace, b_span, _ = parts(delivered.current)
    assert b_trace == TRACE_ID and b_span != relay_span
    b_lines = mesh.access_lines(log_lines)["traceb"]
    assert {line["trace_id"] for line in b_lines} == {TRACE_ID} and len(b_lines) == 2


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


async def test_continue_trace_makes_an_outbound_call_carry_the_trace(
    mesh: Mesh, tokens: TestTokens
) -> None:
    clients = MeshClients(
        targets={"notify": f"127.0.0.1:{mesh.b.grpc_port}"},
        token_for=lambda aud: tokens.service("tracea", aud=aud),
    )
    try:
        with continue_trace(TRACEPARENT, "vendor=y") as span:
            mine = span.get_span_context()
            await clients.notify.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="bg"))
        # Outside any trace, a call carries none (and B starts one).
        await clients.notify.RenderTemplate(notify_pb2.RenderTemplateRequest(template_id="none"))
        # A traceparent the caller set itself is left alone.
        with continue_trace(TRACEPARENT):
            await clients.notify.RenderTemplate(
                notify_pb2.RenderTemplateRequest(template_id="own"),
                metadata=(("traceparent", f"00-{'1' * 32}-{'2' * 16}-00"),),
            )
    finally:
        await clients.close()
    [bg] = mesh.b_seen.seen["bg"]
    assert bg.inbound == f"00-{TRACE_ID}-{mine.span_id:016x}-01" and mine.span_id != int(
        CALLER_SPAN, 16
    )
    assert parts(bg.current)[0] == TRACE_ID
    [none] = mesh.b_seen.seen["none"]
    assert none.inbound is None and parts(none.current)[0] != TRACE_ID
    [own] = mesh.b_seen.seen["own"]
    assert own.inbound == f"00-{'1' * 32}-{'2' * 16}-00"


async def test_a_webhook_on_the_http_port_runs_in_a_trace(
    mesh: Mesh, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    url = f"http://127.0.0.1:{mesh.a.http_port}/hook"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, headers={"traceparent": TRACEPARENT}) as resp:
            continued = (await resp.json())["traceparent"]
        async with session.post(url) as resp:
            fresh = (await resp.json())["traceparent"]
    trace_id, span_id, _ = parts(continued)
    assert trace_id == TRACE_ID and span_id != CALLER_SPAN
    assert parts(fresh)[0] != TRACE_ID
    first, second = mesh.b_seen.seen["hook"]
    assert (first.inbound, second.inbound) == (continued, fresh)
    hooks = [line for line in log_lines() if line.get("message") == "webhook"]
    assert [line["trace_id"] for line in hooks] == [TRACE_ID, parts(fresh)[0]]


# ---------------------------------------------------------------------------------------------
# OTLP export


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert request.headers["Content-Type"] == "application/x-protobuf"
        self.requests.append(ExportTraceServiceRequest.FromString(body))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def spans(self) -> list[tuple[str, OtlpSpan]]:
        """(service.name, span) of every span received."""
        found = []
        for export in self.requests:
            for resource_spans in export.resource_spans:
                attributes = {a.key: a.value for a in resource_spans.resource.attributes}
                service = attributes["service.name"].string_value
                for scope_spans in resource_spans.scope_spans:
                    found += [(service, span) for span in scope_spans.spans]
        return found


@pytest.fixture
async def otlp(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{receiver.port}/v1/traces"
    )
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def test_with_the_otlp_exporter_spans_arrive_with_trace_and_service(
    otlp: OtlpReceiver,
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    tokens: TestTokens,
) -> None:
    a_seen, b_seen = Recorder(), Recorder()
    common: dict[str, Any] = {
        "postgres_url": postgres_url,
        "redis_url": redis_url,
        "dev_dir": dev_dir,
        "tracing_exporter": "otlp",
    }
    # Leaving the blocks stops the apps: their spans are flushed to the receiver at stop.
    async with (
        running_app(
            definition(BSettings, b_seen, forward=False),
            jwt_audience="tickettoken.notify",
            **common,
        ) as b,
        running_app(
            definition(ASettings, a_seen, forward=True, relay=True),
            notify_grpc_target=f"127.0.0.1:{b.grpc_port}",
            **common,
        ) as a,
    ):
        mesh = Mesh(a, b, a_seen, b_seen, tokens)
        await mesh.call_a("publish", (("traceparent", TRACEPARENT),))
        await asyncio.wait_for(_until(lambda: "delivered" in b_seen.seen), timeout=30)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{a.http_port}/hook", headers={"traceparent": TRACEPARENT}
            ) as resp,
        ):
            assert resp.status == 200
        # A call that is not sampled by its caller is not recorded anywhere.
        await mesh.call_a("unsampled", (("traceparent", f"00-{'a' * 32}-{CALLER_SPAN}-00"),))
        # Nor is a health check, sampled or not.
        async with channel_for(a) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(),
                metadata=(("traceparent", f"00-{'b' * 32}-{CALLER_SPAN}-01"),),
            )
    spans = otlp.spans()
    ours = [(service, span) for service, span in spans if span.trace_id.hex() == TRACE_ID]
    assert all(span.trace_id.hex() == TRACE_ID for _, span in spans)  # nothing else
    by_name = {(service, span.name): span for service, span in ours}
    method = "tickettoken.notify.v1.NotifyService/RenderTemplate"
    server_a = by_name[("tracea", method)]
    deliver = by_name[("tracea", "deliver tickettoken.payment.v1.PaymentSucceeded")]
    hook = by_name[("tracea", "POST /hook")]
    servers_b = [span for service, span in ours if service == "traceb"]
    assert len(ours) == 6 and len(servers_b) == 3
    assert server_a.kind == OtlpSpan.SPAN_KIND_SERVER
    assert server_a.parent_span_id.hex() == CALLER_SPAN
    attributes = {a.key: a.value for a in server_a.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "RenderTemplate"
    assert attributes["rpc.grpc.status_code"].int_value == 0
    # B's spans: called by A's handler, by A's relay delivering the event, by A's webhook.
    assert sorted(span.parent_span_id for span in servers_b) == sorted(
        [server_a.span_id, deliver.span_id, hook.span_id]
    )
    assert hook.kind == OtlpSpan.SPAN_KIND_SERVER and hook.parent_span_id.hex() == CALLER_SPAN
    hook_attributes = {a.key: a.value for a in hook.attributes}
    assert hook_attributes["http.response.status_code"].int_value == 200
    assert deliver.parent_span_id == server_a.span_id  # the event was staged in A's span
    [at_a] = a_seen.seen["publish"]
    assert parts(at_a.current)[1] == server_a.span_id.hex()


async def test_a_recorded_span_marks_a_server_error(
    otlp: OtlpReceiver, postgres_url: str, redis_url: str, dev_dir: Path, tokens: TestTokens
) -> None:
    async with running_app(
        definition(ASettings, Recorder(), forward=True),
        postgres_url=postgres_url,
        redis_url=redis_url,
        dev_dir=dev_dir,
        tracing_exporter="otlp",
        notify_grpc_target="127.0.0.1:1",  # nothing listens: B is unavailable
        grpc_client_timeout_s=1.0,
    ) as a:
        mesh = Mesh(a, a, Recorder(), Recorder(), tokens)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await mesh.call_a("x", (("traceparent", TRACEPARENT),))
        assert info.value.code() is grpc.StatusCode.INTERNAL
        async with aiohttp.ClientSession() as session:
            for path in ("/hook", "/nowhere"):  # the webhook fails (B is down); no such page
                url = f"http://127.0.0.1:{a.http_port}{path}"
                async with session.post(url, headers={"traceparent": TRACEPARENT}) as resp:
                    assert resp.status == (500 if path == "/hook" else 404)
    spans = {span.name: (service, span) for service, span in otlp.spans()}
    assert set(spans) == {
        "tickettoken.notify.v1.NotifyService/RenderTemplate",
        "POST /hook",
        "POST unmatched",
    }
    for service, span in spans.values():
        assert service == "tracea" and span.trace_id.hex() == TRACE_ID
    rpc = spans["tickettoken.notify.v1.NotifyService/RenderTemplate"][1]
    assert rpc.status.code == rpc.status.STATUS_CODE_ERROR
    codes = {a.key: a.value.int_value for a in rpc.attributes}
    assert codes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    hook, missing = spans["POST /hook"][1], spans["POST unmatched"][1]
    assert hook.status.code == hook.status.STATUS_CODE_ERROR
    assert [event.name for event in hook.events] == ["exception"]
    assert missing.status.code == missing.status.STATUS_CODE_UNSET  # the client's mistake
    statuses = {a.key: a.value.int_value for a in missing.attributes}
    assert statuses["http.response.status_code"] == 404
