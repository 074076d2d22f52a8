"""Trace context across the mesh: W3C `traceparent` in, through and out of every service.

One purchase is one trace through payment, nft and notify, whichever way the work travels:

* in — the kit's call layer continues the caller's trace from the inbound `traceparent`
  (+ `tracestate`) metadata as a new server span of this service (same trace id, new span id);
  without one, or with an invalid one, the call starts a new trace. The handler runs with that
  span current (`start_server_span`);
* through — `EventPublisher` stores the current span context with each outbox event
  (`current_traceparent`), and a relay delivering it runs under `continue_trace(traceparent)`;
* out — `MeshClients` put the current span context on every outbound call (`trace_headers`);
* logs — every JSON log line and the access-log line carry `trace_id` and `span_id`.

`Tracing` is one service's OpenTelemetry setup, built by the App from its settings. With
`TRACING_EXPORTER=none` (the default) nothing is recorded: spans are OpenTelemetry
`NonRecordingSpan`s made here directly, not through the SDK (a random span id and one context
switch per call: ~2 us alone, ~2-3 % of the kit's throughput in bench/grpc_overhead.py, where a
recording SDK span would cost ~9 us more), so the trace context still propagates and is logged
at little cost. With `otlp`, an SDK `TracerProvider` (resource `service.name`) records spans
through a `BatchSpanProcessor` into the OTLP/HTTP protobuf exporter, which reads the standard
`OTEL_EXPORTER_OTLP_*` variables; the HTTP exporter rather than the gRPC one because it exports
from the processor's own thread over plain `requests`, without a second (synchronous) gRPC stack
in a grpc.aio process, and port 4318 is what every collector accepts.

Sampling is the same either way: a call that arrives with a trace keeps the caller's `sampled`
flag (ParentBased); a new trace is sampled with probability `TRACING_SAMPLE_RATIO` (the SDK's
TraceIdRatioBased rule on the trace id). So services that export record the same traces even
when a service between them exports nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from meshkit.settings import KitSettings

__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "Exporter",
    "Tracing",
    "continue_trace",
    "current_trace_id",
    "current_traceparent",
    "parent_context",
    "parse_traceparent",
    "trace_headers",
    "traceparent_var",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
Exporter = Literal["none", "otlp"]

traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)
"""An explicit `traceparent` for code that runs outside any span (e.g. a test staging events);
the current span, when there is one, wins."""
_tracer_var: ContextVar[trace.Tracer | None] = ContextVar("meshkit_tracer", default=None)
"""The tracer `continue_trace` starts spans with: set by the App for its background workers."""

_PROPAGATOR = TraceContextTextMapPropagator()
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_LOW_64 = TraceIdRatioBased.TRACE_ID_LIMIT
# Server-span codes that are the server's fault (OpenTelemetry RPC semantic conventions); the
# others (bad input, not found, denied ...) are the caller's and leave the span's status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_getrandbits = random.getrandbits


def parse_traceparent(traceparent: str | None, tracestate: str | None = None) -> SpanContext | None:
    """The remote span context a W3C `traceparent` (+ `tracestate`) names; None when it is
    missing or invalid (the W3C rules, as OpenTelemetry's TraceContext propagator applies them)."""
    if not traceparent:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    span_context = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    return span_context if span_context.is_valid else None


def parent_context(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context:
    """An OpenTelemetry context whose span is the remote parent `traceparent` names (empty when
    it is missing or invalid: a span started in it is a new trace), for `tracer.start_span`."""
    parent = parse_traceparent(traceparent, tracestate)
    if parent is None:
        return otel_context.Context()
    return trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())


def _format(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"


def current_traceparent() -> str | None:
    """The current span context as a W3C `traceparent` value, or None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return _format(span_context)
    return traceparent_var.get()


def current_trace_id() -> str | None:
    """The current trace id (32 lowercase hex digits), or None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}" if span_context.is_valid else None


def trace_headers() -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate` when there is one) of the current span, for an outbound
    call's metadata; empty outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        explicit = traceparent_var.get()
        return [(TRACEPARENT, explicit)] if explicit else []
    headers = [(TRACEPARENT, _format(span_context))]
    if span_context.trace_state:
        headers.append((TRACESTATE, span_context.trace_state.to_header()))
    return headers


class _PassThroughTracer(trace.NoOpTracer):
    """The tracer when nothing is exported: spans never record, but each has a span id of its
    own under its parent's trace (and keeps the parent's sampled flag), so context made with it
    still propagates and logs as it would with an exporter."""

    def __init__(self, bound: int) -> None:
        self.bound = bound

    def span_context(self, parent: SpanContext | None) -> SpanContext:
        """A new span's context: a child of `parent`, or a new root when None/invalid."""
        if parent is None or not parent.is_valid:
            trace_id = _getrandbits(128) or 1
            flags = _SAMPLED if (trace_id & _LOW_64) < self.bound else _NOT_SAMPLED
            return SpanContext(trace_id, _getrandbits(64) or 1, False, flags)
        return SpanContext(
            parent.trace_id, _getrandbits(64) or 1, False, parent.trace_flags, parent.trace_state
        )

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Any = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return NonRecordingSpan(
            self.span_context(trace.get_current_span(context).get_span_context())
        )


class Tracing:
    """One service's OpenTelemetry setup (module doc): its tracer, the server span of each RPC,
    and flushing at shutdown. Spans are recorded with `exporter="otlp"`, or into `span_exporter`
    when one is given (another backend, or an in-memory one in tests)."""

    def __init__(
        self,
        service_name: str,
        *,
        exporter: Exporter = "none",
        sample_ratio: float = 1.0,
        environment: str | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError("sample_ratio must be between 0 and 1")
        self.service_name = service_name
        self.exporter = exporter
        self._pass_through = _PassThroughTracer(TraceIdRatioBased.get_bound_for_rate(sample_ratio))
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = self._pass_through
        """Start spans of this service's own with it (`kit.tracing.tracer`)."""
        if exporter == "otlp" or span_exporter is not None:
            attributes: dict[str, str] = {"service.name": service_name}
            if environment:
                attributes["deployment.environment.name"] = environment
            self.provider = TracerProvider(
                resource=Resource.create(attributes),
                sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            )
            if span_exporter is None:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                span_exporter = OTLPSpanExporter()
            self.provider.add_span_processor(BatchSpanProcessor(span_exporter))
            self.tracer = self.provider.get_tracer("meshkit")
        self.recording = self.provider is not None
        """True when spans are recorded and exported (an exporter is configured)."""

    @classmethod
    def from_settings(cls, settings: KitSettings) -> Tracing:
        """The tracing a service's KitSettings ask for (TRACING_EXPORTER, TRACING_SAMPLE_RATIO)."""
        return cls(
            settings.service_name,
            exporter=settings.tracing_exporter,
            sample_ratio=settings.tracing_sample_ratio,
            environment=settings.app_env,
        )

    # ----------------------------------------------------------------------------------------
    def start_server_span(
        self,
        name: str,
        attributes: Mapping[str, str],
        traceparent: str | None,
        tracestate: str | None,
        *,
        record: bool = True,
    ) -> Span:
        """Begin an RPC's server span (a child of the caller's, or a new trace) and make it the
        current span of the calling task: the kit's layer calls this once per RPC, in the RPC's
        own task, so it is never detached. `record=False` (health checks, reflection): the call
        has a trace context for its logs but is never recorded."""
        parent = parse_traceparent(traceparent, tracestate) if traceparent is not None else None
        span: Span
        if self.provider is None or not record:
            span = NonRecordingSpan(self._pass_through.span_context(parent))
        else:
            context = otel_context.Context()
            if parent is not None:
                context = trace.set_span_in_context(NonRecordingSpan(parent), context)
            span = self.tracer.start_span(
                name, context, kind=SpanKind.SERVER, attributes=attributes
            )
        otel_context.attach(trace.set_span_in_context(span))
        return span

    @staticmethod
    def end_server_span(span: Span, code: grpc.StatusCode) -> None:
        """End a recording server span with the call's gRPC status."""
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

    def background(self) -> _Background:
        """Use as `with tracing.background(): create_task(...)`: tasks created inside start their
        `continue_trace` spans with this service's tracer (the App wraps its workers in it)."""
        return _Background(self.tracer)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export every finished span now (blocking; call through asyncio.to_thread)."""
        if self.provider is None:
            return True
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Export the spans still queued and stop (blocking; the App calls it through
        asyncio.to_thread after its workers stopped). With the collector unreachable this takes
        up to the exporter's timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s) and drops the spans."""
        if self.provider is not None:
            self.provider.shutdown()


class _Background:
    """Sets the tracer `continue_trace` uses for the tasks created inside the block."""

    __slots__ = ("_token", "_tracer")

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = _tracer_var.set(self._tracer)

    def __exit__(self, *exc: object) -> None:
        _tracer_var.reset(self._token)


@contextmanager
def continue_trace(
    traceparent: str | None,
    tracestate: str | None = None,
    *,
    name: str = "continue_trace",
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Attributes = None,
    tracer: trace.Tracer | None = None,
) -> Iterator[Span]:
    """Run the block in a new span of the trace `traceparent` names (a new trace when it is
    None or invalid): log lines inside carry its trace id, outbound calls and staged events carry
    its context. For background work: a relay delivering an outbox event passes the event's
    stored trace (`envelope.trace.traceparent`, `.tracestate`); a job starting a round of its
    own passes None. The span is recorded when the service exports (`tracer`, by default the
    service's in the App's workers); an exception leaving the block marks it failed."""
    if tracer is None:
        tracer = _tracer_var.get() or _DEFAULT_TRACER
    span = tracer.start_span(
        name, parent_context(traceparent, tracestate), kind=kind, attributes=attributes
    )
    with trace.use_span(span, end_on_exit=True):
        yield span


_DEFAULT_TRACER = _PassThroughTracer(TraceIdRatioBased.get_bound_for_rate(1.0))
