"""Prometheus metrics for gRPC servers with the go-grpc-prometheus names.

Every metric lives on a registry passed in (no module globals), so tests can build several
servers in one process. Label children are resolved once per method and cached: the hot path
does only `inc()`/`observe()` on prepared children.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def new_registry() -> CollectorRegistry:
    """A registry with process and platform collectors, as the default registry would have."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


@dataclass(slots=True)
class MethodMetrics:
    """Prepared label children for one RPC method."""

    started: Counter
    handled: dict[grpc.StatusCode, Counter]
    seconds: Histogram
    received: Counter
    sent: Counter


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


class GrpcServerMetrics:
    """`grpc_server_*` metrics; `for_method` pre-initialises every code for a method."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=registry
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            (*labels, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received",
            "RPC stream messages received on the server.",
            labels,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent",
            "gRPC stream messages sent on the server.",
            labels,
            registry=registry,
        )
        self._methods: dict[str, MethodMetrics] = {}

    def for_method(self, full_method: str, rpc_type: str) -> MethodMetrics:
        prepared = self._methods.get(full_method)
        if prepared is None:
            service, method = split_method(full_method)
            values = (rpc_type, service, method)
            prepared = MethodMetrics(
                started=self.started.labels(*values),
                handled={code: self.handled.labels(*values, code.name) for code in grpc.StatusCode},
                seconds=self.handling.labels(*values),
                received=self.received.labels(*values),
                sent=self.sent.labels(*values),
            )
            self._methods[full_method] = prepared
        return prepared
