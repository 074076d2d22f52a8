"""The grpc_server_* collector: what Prometheus scrapes from the per-method counters."""

from __future__ import annotations

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshkit.metrics import LATENCY_BUCKETS, GrpcServerMetrics

METHOD = "/tickettoken.notify.v1.NotifyService/RenderTemplate"


def scrape(registry: CollectorRegistry) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    families: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        families[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return families


# The canonical list: what go-grpc-prometheus writes (grpc-go's codes.Code.String()), which every
# dashboard and alert written for the grpc_server_* names matches on.
GO_GRPC_PROMETHEUS_CODES = {
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
}


def test_every_grpc_code_label_is_the_go_grpc_prometheus_name() -> None:
    registry = CollectorRegistry()
    stats = GrpcServerMetrics(registry).for_method(METHOD, "unary")
    for code in grpc.StatusCode:
        stats.handled[code.value[0]] += code.value[0] + 1  # a distinct count per code
    codes = {
        labels["grpc_code"]: value for _, labels, value in scrape(registry)["grpc_server_handled"]
    }
    assert set(codes) == GO_GRPC_PROMETHEUS_CODES
    assert codes["Canceled"] == grpc.StatusCode.CANCELLED.value[0] + 1
    assert codes["Unauthenticated"] == grpc.StatusCode.UNAUTHENTICATED.value[0] + 1
    assert codes["InvalidArgument"] == grpc.StatusCode.INVALID_ARGUMENT.value[0] + 1


def test_a_new_method_reports_every_code_at_zero() -> None:
    registry = CollectorRegistry()
    GrpcServerMetrics(registry).for_method(METHOD, "unary")
    families = scrape(registry)
    handled = families["grpc_server_handled"]
    assert {labels["grpc_code"] for _, labels, _ in handled} == GO_GRPC_PROMETHEUS_CODES
    assert all(value == 0 for _, _, value in handled)
    assert handled[0][1]["grpc_type"] == "unary"
    assert handled[0][1]["grpc_service"] == "tickettoken.notify.v1.NotifyService"
    assert handled[0][1]["grpc_method"] == "RenderTemplate"
    for name in ("grpc_server_started", "grpc_server_msg_received", "grpc_server_msg_sent"):
        assert [value for _, _, value in families[name]] == [0]


def test_counts_codes_and_cumulative_latency_buckets() -> None:
    registry = CollectorRegistry()
    stats = GrpcServerMetrics(registry).for_method(METHOD, "unary")
    stats.started += 3
    stats.received += 3
    stats.sent += 2
    stats.handled[grpc.StatusCode.OK.value[0]] += 2
    stats.handled[grpc.StatusCode.NOT_FOUND.value[0]] += 1
    for seconds in (0.001, 0.004, 30.0):  # on a bound, inside a bucket, past the last bound
        stats.observe(seconds)
    families = scrape(registry)
    codes = {labels["grpc_code"]: value for _, labels, value in families["grpc_server_handled"]}
    assert codes["OK"] == 2 and codes["NotFound"] == 1 and codes["Internal"] == 0
    assert stats.handled_count(grpc.StatusCode.OK) == 2
    assert [v for _, _, v in families["grpc_server_started"]] == [3]
    assert [v for _, _, v in families["grpc_server_msg_sent"]] == [2]
    histogram = families["grpc_server_handling_seconds"]
    buckets = {labels["le"]: value for name, labels, value in histogram if name.endswith("_bucket")}
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["0.001"] == 1  # le is inclusive
    assert buckets["0.0025"] == 1 and buckets["0.005"] == 2 and buckets["10.0"] == 2
    assert buckets["+Inf"] == 3
    count = [v for n, _, v in histogram if n.endswith("_count")]
    total = [v for n, _, v in histogram if n.endswith("_sum")]
    assert count == [3] and total == [pytest.approx(30.005)]


def test_two_collectors_on_one_registry_are_refused() -> None:
    registry = CollectorRegistry()
    GrpcServerMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        GrpcServerMetrics(registry)
