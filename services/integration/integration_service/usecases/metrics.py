"""The integration service's own metrics (besides the kit's gRPC, guard, job and outbox
metrics): what an operator alerts on — refreshes refused (connections needing a new
authorization), webhooks refused, credential use."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class IntegrationMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refreshes = Counter(
            "integration_token_refreshes_total",
            "Token refreshes at the provider by outcome (refreshed, refused, failed, "
            "superseded: a newer fence had been stored).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.webhooks = Counter(
            "integration_webhook_events_total",
            "Provider webhook events by outcome (processed, duplicate, ignored, refused).",
            ["provider", "outcome"],
            registry=registry,
        )
        self.opens = Counter(
            "integration_credential_opens_total",
            "Credentials opened from the vault, by purpose.",
            ["purpose"],
            registry=registry,
        )
