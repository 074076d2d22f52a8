"""Prometheus metrics for gRPC servers with the go-grpc-prometheus names.

The per-RPC path only adds to plain integers on a per-method `MethodStats` (prepared once per
method when the handler is registered); `GrpcServerMetrics` is a registry collector that turns
them into the `grpc_server_*` families when Prometheus scrapes. A prometheus_client child costs a
lock and two method calls per `inc()` (~1-2 us each, six per RPC); this costs a few attribute
additions. Everything runs on the server's event loop (RPC handlers and the /metrics handler
alike), so the counters need no lock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LE = (*(floatToGoString(b) for b in LATENCY_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]
_CODES = sorted(grpc.StatusCode, key=lambda c: c.value[0])
CODE_INDEX: dict[grpc.StatusCode, int] = {c: c.value[0] for c in _CODES}
OK_INDEX = CODE_INDEX[grpc.StatusCode.OK]
# The `grpc_code` label values exactly as go-grpc-prometheus writes them (Go's codes.Code
# String(): "OK", "Canceled" with one l, "InvalidArgument", ...), which every dashboard and alert
# written for these metric names expects.
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
assert set(GO_CODE_NAMES) == set(grpc.StatusCode)


def new_registry() -> CollectorRegistry:
    """A registry with process and platform collectors, as the default registry would have."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class MethodStats:
    """The counters of one RPC method; the hot path adds to these attributes directly."""

    __slots__ = ("buckets", "handled", "labels", "received", "sent", "started", "total_seconds")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels  # grpc_type, grpc_service, grpc_method
        self.started = 0
        self.received = 0
        self.sent = 0
        self.handled = [0] * (max(CODE_INDEX.values()) + 1)  # by status code number
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket (not cumulative), +Inf last
        self.total_seconds = 0.0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total_seconds += seconds

    def handled_count(self, code: grpc.StatusCode) -> int:
        return self.handled[CODE_INDEX[code]]


def grpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """`/pkg.Service/Method` → (`pkg.Service`, `Method`)."""
    _, service, method = full_method.split("/", 2)
    return service, method


_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class GrpcServerMetrics(Collector):
    """`grpc_server_*` metrics, collected from every method's `MethodStats` at scrape time.

    Every method reports all codes (zeros included) from registration on, as go-grpc-prometheus
    does after `InitializeMetrics`, so rate() queries see a series before its first error."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._methods: dict[str, MethodStats] = {}
        registry.register(self)

    def for_method(self, full_method: str, rpc_type: str) -> MethodStats:
        stats = self._methods.get(full_method)
        if stats is None:
            service, method = split_method(full_method)
            stats = MethodStats((rpc_type, service, method))
            self._methods[full_method] = stats
        return stats

    def describe(self) -> Iterator[Metric]:
        return self._families(())

    def collect(self) -> Iterator[Metric]:
        return self._families(tuple(self._methods.values()))

    @staticmethod
    def _families(methods: tuple[MethodStats, ...]) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started", "RPCs started on the server.", labels=_LABELS
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            labels=(*_LABELS, "grpc_code"),
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server.",
            labels=_LABELS,
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received",
            "RPC stream messages received on the server.",
            labels=_LABELS,
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent", "gRPC stream messages sent on the server.", labels=_LABELS
        )
        for m in methods:
            labels = list(m.labels)
            started.add_metric(labels, m.started)
            received.add_metric(labels, m.received)
            sent.add_metric(labels, m.sent)
            for code in _CODES:
                handled.add_metric([*labels, GO_CODE_NAMES[code]], m.handled[CODE_INDEX[code]])
            cumulative, buckets = 0, []
            for le, count in zip(_LE, m.buckets, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            seconds.add_metric(labels, buckets, m.total_seconds)
        yield from (started, handled, seconds, received, sent)
