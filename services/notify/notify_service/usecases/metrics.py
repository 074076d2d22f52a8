"""The notify service's own metrics (besides the kit's gRPC, guard, job and outbox metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "notify_requests_total",
            "SendNotification outcomes (queued, deferred, suppressed, duplicate).",
            ["channel", "outcome"],
            registry=registry,
        )
        self.sends = Counter(
            "notify_sends_total",
            "Provider send attempts by outcome (sent, transient, unknown, rejected, recipient, "
            "content).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.outcomes = Counter(
            "notify_notifications_total",
            "Notifications reaching a state after a delivery round or a receipt.",
            ["channel", "status"],
            registry=registry,
        )
        self.failovers = Counter(
            "notify_failovers_total",
            "Sends handed to the next provider of the channel.",
            ["from_provider", "to_provider"],
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "notify_queue_seconds",
            "Time from due to accepted by a provider.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.receipts = Counter(
            "notify_receipts_total",
            "Delivery receipts by provider and outcome (processed, duplicate, ignored, refused).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.depth = Gauge(
            "notify_queue_depth", "Notifications waiting to be sent.", registry=registry
        )
