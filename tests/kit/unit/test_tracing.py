"""meshkit.tracing without a network: W3C parsing, continue_trace, sampling, spans, log fields.

Recorded spans are read back through the OpenTelemetry SDK's own in-memory exporter.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from meshkit import context as kit_context
from meshkit.logs import AccessLog, ContextFilter, JsonFormatter
from meshkit.settings import KitSettings, SettingsError, load_settings
from meshkit.tracing import (
    Tracing,
    continue_trace,
    current_trace_id,
    current_traceparent,
    parse_traceparent,
    trace_headers,
    traceparent_var,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"
T = TypeVar("T")


def isolated(fn: Callable[[], T]) -> T:
    """Run `fn` in a copy of the current context (as the kit's layer runs in an RPC's task)."""
    return contextvars.copy_context().run(fn)


def parts(traceparent: str | None) -> tuple[str, str, str]:
    assert traceparent is not None
    version, trace_id, span_id, flags = traceparent.split("-")
    assert version == "00" and int(trace_id, 16) and int(span_id, 16)
    return trace_id, span_id, flags


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"00-{'0' * 32}-{PARENT}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{PARENT}-01",
        f"00-{TRACE_ID.upper()}-{PARENT}-01",
        f"00-{TRACE_ID}-{PARENT}-01-extra",
        f"00-{TRACE_ID[:-1]}-{PARENT}-01",
    ],
)
def test_invalid_traceparents_name_no_parent(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_names_a_remote_parent_with_its_state() -> None:
    parent = parse_traceparent(TRACEPARENT, "vendor=x,other=y")
    assert parent is not None and parent.is_remote
    assert (f"{parent.trace_id:032x}", f"{parent.span_id:016x}") == (TRACE_ID, PARENT)
    assert parent.trace_flags.sampled and parent.trace_state.to_header() == "vendor=x,other=y"
    # A future version may append fields; its first four are still understood.
    future = parse_traceparent(f"cc-{TRACE_ID}-{PARENT}-00-more")
    assert future is not None and not future.trace_flags.sampled


def test_outside_any_trace_there_is_no_context() -> None:
    assert current_traceparent() is None and current_trace_id() is None
    assert trace_headers() == []
    assert kit_context.current_traceparent is current_traceparent  # the old name delegates


def test_an_explicit_traceparent_is_used_outside_any_span() -> None:
    def run() -> tuple[str | None, list[tuple[str, str]], str | None]:
        traceparent_var.set(TRACEPARENT)
        outside = current_traceparent(), trace_headers()
        with continue_trace(None):
            inside = current_traceparent()
        return outside[0], outside[1], inside

    outside, headers, inside = isolated(run)
    assert outside == TRACEPARENT and headers == [("traceparent", TRACEPARENT)]
    assert inside != TRACEPARENT  # the current span wins


def test_continue_trace_continues_the_given_trace_in_a_span_of_its_own() -> None:
    with continue_trace(TRACEPARENT, "vendor=x") as span:
        trace_id, span_id, flags = parts(current_traceparent())
        assert (trace_id, flags) == (TRACE_ID, "01") and span_id != PARENT
        assert span.get_span_context().span_id == int(span_id, 16)
        assert current_trace_id() == TRACE_ID
        assert trace_headers() == [
            ("traceparent", current_traceparent()),
            ("tracestate", "vendor=x"),
        ]
        with continue_trace(None) as inner:  # a new root inside: its own trace, then back
            assert parts(current_traceparent())[0] != TRACE_ID
            assert not inner.is_recording()
        assert parts(current_traceparent())[1] == span_id
    assert current_traceparent() is None


@pytest.mark.parametrize("value", [None, "", "garbage", f"00-{'0' * 32}-{PARENT}-01"])
def test_continue_trace_starts_a_new_trace_without_a_valid_parent(value: str | None) -> None:
    seen = set()
    for _ in range(3):
        with continue_trace(value):
            trace_id, _, _ = parts(current_traceparent())
            seen.add(trace_id)
    assert len(seen) == 3 and TRACE_ID not in seen


def _server_span(tracing: Tracing, traceparent: str | None) -> Any:
    def run() -> Any:
        span = tracing.start_server_span("pkg.Svc/M", {"rpc.system": "grpc"}, traceparent, None)
        assert trace.get_current_span() is span  # current for the rest of the task
        return span

    return isolated(run)


def test_new_traces_are_sampled_by_ratio_and_continued_ones_keep_the_callers_flag() -> None:
    never, always = Tracing("svc", sample_ratio=0.0), Tracing("svc", sample_ratio=1.0)
    assert not _server_span(never, None).get_span_context().trace_flags.sampled
    assert _server_span(always, None).get_span_context().trace_flags.sampled
    unsampled_parent = f"00-{TRACE_ID}-{PARENT}-00"
    assert _server_span(never, TRACEPARENT).get_span_context().trace_flags.sampled
    assert not _server_span(always, unsampled_parent).get_span_context().trace_flags.sampled
    span = _server_span(always, TRACEPARENT)
    assert not span.is_recording()  # nothing exported: nothing recorded
    assert span.get_span_context().trace_id == int(TRACE_ID, 16)
    assert span.get_span_context().span_id != int(PARENT, 16)


def test_a_ratio_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Tracing("svc", sample_ratio=1.5)
    with pytest.raises(SettingsError, match="TRACING_SAMPLE_RATIO"):
        load_settings(
            KitSettings,
            database_url="postgresql://x",
            redis_url="redis://x",
            tracing_sample_ratio=2,
        )
    with pytest.raises(SettingsError, match="TRACING_EXPORTER"):
        load_settings(
            KitSettings, database_url="postgresql://x", redis_url="redis://x", tracing_exporter="x"
        )


def test_tracing_follows_the_settings() -> None:
    settings = load_settings(KitSettings, database_url="postgresql://x", redis_url="redis://x")
    assert (settings.tracing_exporter, settings.tracing_sample_ratio) == ("none", 1.0)
    tracing = Tracing.from_settings(settings)
    assert not tracing.recording and tracing.provider is None
    tracing.shutdown()  # nothing to flush
    otlp = Tracing.from_settings(
        load_settings(
            KitSettings,
            database_url="postgresql://x",
            redis_url="redis://x",
            tracing_exporter="otlp",
        )
    )
    try:
        assert otlp.recording and otlp.provider is not None
        assert otlp.provider.resource.attributes["service.name"] == "service"
    finally:
        otlp.shutdown()


@pytest.fixture
def recorded() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    tracing = Tracing("svc-under-test", span_exporter=exporter, environment="test")
    yield tracing, exporter
    tracing.shutdown()


def test_a_recorded_server_span_continues_the_caller_and_ends_with_the_code(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    ok = _server_span(tracing, TRACEPARENT)
    failed = _server_span(tracing, None)
    refused = _server_span(tracing, None)
    assert ok.is_recording()
    tracing.end_server_span(ok, grpc.StatusCode.OK)
    tracing.end_server_span(failed, grpc.StatusCode.INTERNAL)
    tracing.end_server_span(refused, grpc.StatusCode.NOT_FOUND)  # the caller's fault
    assert tracing.flush()
    spans = {span.context.span_id: span for span in exporter.get_finished_spans()}
    first = spans[ok.get_span_context().span_id]
    assert first.kind is SpanKind.SERVER and first.name == "pkg.Svc/M"
    assert first.parent is not None and first.parent.span_id == int(PARENT, 16)
    assert first.parent.is_remote and first.context.trace_id == int(TRACE_ID, 16)
    assert first.attributes == {"rpc.system": "grpc", "rpc.grpc.status_code": 0}
    assert first.resource.attributes["service.name"] == "svc-under-test"
    assert first.resource.attributes["deployment.environment.name"] == "test"
    assert first.status.status_code is StatusCode.UNSET
    second = spans[failed.get_span_context().span_id]
    assert second.parent is None and second.status.status_code is StatusCode.ERROR
    third = spans[refused.get_span_context().span_id]
    assert third.status.status_code is StatusCode.UNSET
    assert third.attributes is not None and third.attributes["rpc.grpc.status_code"] == 5


def test_an_unsampled_caller_is_not_recorded(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded
    span = _server_span(tracing, f"00-{TRACE_ID}-{PARENT}-00")
    assert not span.is_recording() and span.get_span_context().trace_id == int(TRACE_ID, 16)
    tracing.end_server_span(span, grpc.StatusCode.OK)
    tracing.flush()
    assert exporter.get_finished_spans() == ()


async def test_background_tasks_record_continue_trace_spans_with_the_service_tracer(
    recorded: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = recorded

    async def deliver(name: str, fail: bool = False) -> None:
        with continue_trace(TRACEPARENT, name=name, kind=SpanKind.CONSUMER):
            if fail:
                raise RuntimeError("consumer refused")

    with tracing.background():
        inside = asyncio.create_task(deliver("inside"))
        failing = asyncio.create_task(deliver("failing", fail=True))
    outside = asyncio.create_task(deliver("outside"))
    await inside
    await outside
    with pytest.raises(RuntimeError):
        await failing
    tracing.flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"inside", "failing"}  # outside: nothing records
    assert spans["inside"].kind is SpanKind.CONSUMER
    assert spans["inside"].parent is not None and spans["inside"].parent.span_id == int(PARENT, 16)
    assert spans["failing"].status.status_code is StatusCode.ERROR


def test_log_lines_carry_the_trace() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter("svc-under-test"))
    logger = logging.getLogger("tests.tracing.unit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("outside")
        with continue_trace(TRACEPARENT):
            span_id = parts(current_traceparent())[1]
            logger.info("inside", extra={"step": 1})
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in buf.getvalue().splitlines())
    assert outside["trace_id"] is None and outside["span_id"] is None
    assert inside["trace_id"] == TRACE_ID and inside["span_id"] == span_id
    assert inside["step"] == 1 and inside["service"] == "svc-under-test"


def test_access_lines_carry_the_trace() -> None:
    buf = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(buf)
    root.handlers.insert(0, handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        access = AccessLog("svc-under-test")
        prefix = access.prefix(grpc_service="pkg.Svc", grpc_method="M")
        common: dict[str, Any] = {"duration_ms": 1.0, "principal": None, "peer": None}
        access.record(
            prefix, code="OK", request_id="r1", trace_id=TRACE_ID, span_id=PARENT, **common
        )
        access.record(prefix, code="OK", request_id=None, **common)
        access.flush()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    traced, untraced = (json.loads(line) for line in buf.getvalue().splitlines())
    assert (traced["trace_id"], traced["span_id"], traced["request_id"]) == (TRACE_ID, PARENT, "r1")
    assert untraced["trace_id"] is None and untraced["span_id"] is None
