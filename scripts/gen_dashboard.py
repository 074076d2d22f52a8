"""Generate the Grafana dashboard of the mesh from the panel list below.

Usage::

    python scripts/gen_dashboard.py           # rewrite the dashboard JSON
    python scripts/gen_dashboard.py --check   # fail if the committed JSON differs

Writes deploy/k8s/components/monitoring/dashboards/tickettoken-mesh.json (shipped as a ConfigMap
for Grafana's dashboard sidecar by the monitoring component). Every metric a panel queries is
checked against what the running services export (tests/deploy/test_monitoring.py).
The integration sync metrics are read from shared tables, so every replica reports the same
values: their panels take `max` over pods, never `sum`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "deploy/k8s/components/monitoring/dashboards/tickettoken-mesh.json"

SEL = 'namespace="$namespace", job=~"$job"'
APP_RPCS = 'grpc_service!~"grpc\\\\.health\\\\..*|grpc\\\\.reflection\\\\..*"'
SERVER_ERRORS = 'grpc_code=~"Unknown|Internal|Unavailable|DataLoss|DeadlineExceeded"'

Panel = tuple[str, str, list[tuple[str, str]]]  # title, unit, [(expr, legend)]

ROWS: list[tuple[str, list[Panel]]] = [
    (
        "RED per RPC",
        [
            (
                "Requests / s by method",
                "reqps",
                [
                    (
                        f"sum by (job, grpc_method) (rate(grpc_server_handled_total{{{SEL}, "
                        f"{APP_RPCS}}}[$__rate_interval]))",
                        "{{job}} {{grpc_method}}",
                    )
                ],
            ),
            (
                "Errors / s by method and code (client codes included)",
                "reqps",
                [
                    (
                        f"sum by (job, grpc_method, grpc_code) (rate(grpc_server_handled_total"
                        f'{{{SEL}, {APP_RPCS}, grpc_code!="OK"}}[$__rate_interval])) > 0',
                        "{{job}} {{grpc_method}} {{grpc_code}}",
                    )
                ],
            ),
            (
                "Server error ratio by method",
                "percentunit",
                [
                    (
                        f"sum by (job, grpc_method) (rate(grpc_server_handled_total{{{SEL}, "
                        f"{SERVER_ERRORS}}}[$__rate_interval])) / sum by (job, grpc_method) "
                        f"(rate(grpc_server_handled_total{{{SEL}}}[$__rate_interval]))",
                        "{{job}} {{grpc_method}}",
                    )
                ],
            ),
            (
                "Latency p50 / p99 by method",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (job, grpc_method, le) (rate("
                        f"grpc_server_handling_seconds_bucket{{{SEL}, {APP_RPCS}}}"
                        f"[$__rate_interval])))",
                        f"p{int(q * 100)} {{{{job}}}} {{{{grpc_method}}}}",
                    )
                    for q in (0.5, 0.99)
                ],
            ),
            (
                "Latency SLO: share of unary RPCs slower than 0.5 s (SLO 1 %)",
                "percentunit",
                [
                    ('tickettoken:grpc_slow_ratio:rate5m{namespace="$namespace"}', "{{job}} 5m"),
                    ('tickettoken:grpc_slow_ratio:rate1h{namespace="$namespace"}', "{{job}} 1h"),
                ],
            ),
            (
                "Idempotency takeovers (dead holders) / s",
                "ops",
                [
                    (
                        f"sum by (job, reason) (rate(idempotency_lock_takeovers_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "{{job}} {{reason}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Providers and breakers",
        [
            (
                "Provider calls / s by outcome",
                "reqps",
                [
                    (
                        f"sum by (provider, operation, outcome) (rate(provider_requests_total"
                        f"{{{SEL}}}[$__rate_interval]))",
                        "{{provider}} {{operation}} {{outcome}}",
                    )
                ],
            ),
            (
                "Provider latency p99",
                "s",
                [
                    (
                        f"histogram_quantile(0.99, sum by (provider, operation, le) (rate("
                        f"provider_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "{{provider}} {{operation}}",
                    )
                ],
            ),
            (
                "Provider retries / s and retry budget exhausted",
                "ops",
                [
                    (
                        f"sum by (provider) (rate(provider_retries_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "retries {{provider}}",
                    ),
                    (
                        f"sum by (provider) (rate(retry_budget_exhausted_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "budget exhausted {{provider}}",
                    ),
                ],
            ),
            (
                "Circuit breaker state (0 closed, 1 half-open, 2 open)",
                "short",
                [
                    (
                        f"max by (job, provider) (circuit_breaker_state{{{SEL}}})",
                        "{{job}} {{provider}}",
                    )
                ],
            ),
            (
                "Breaker transitions",
                "short",
                [
                    (
                        f"sum by (provider, to_state) (increase("
                        f"circuit_breaker_transitions_total{{{SEL}}}[$__rate_interval]))",
                        "{{provider}} → {{to_state}}",
                    )
                ],
            ),
            (
                "Rate limiter: wait p99, rejected and missed slots",
                "s",
                [
                    (
                        f"histogram_quantile(0.99, sum by (provider, le) (rate("
                        f"rate_limit_wait_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "wait p99 {{provider}}",
                    ),
                    (
                        f"sum by (provider) (rate(rate_limit_rejected_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "rejected/s {{provider}}",
                    ),
                    (
                        f"sum by (provider) (rate(rate_limit_missed_slots_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "missed slots/s {{provider}}",
                    ),
                ],
            ),
            (
                "Guards' shared state (Redis) and local fallback decisions",
                "short",
                [
                    (f"min by (pod) (guard_shared_state_up{{{SEL}}})", "up {{pod}}"),
                    (
                        f"sum by (provider, component) (rate(guard_fallback_decisions_total"
                        f"{{{SEL}}}[$__rate_interval]))",
                        "fallback/s {{provider}} {{component}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Outbox and dead letters",
        [
            ("Outbox pending", "short", [(f"max by (job) (outbox_pending{{{SEL}}})", "{{job}}")]),
            (
                "Delivered / failed per s by topic",
                "ops",
                [
                    (
                        f"sum by (topic) (rate(outbox_delivered_total{{{SEL}}}[$__rate_interval]))",
                        "delivered {{topic}}",
                    ),
                    (
                        f"sum by (topic) (rate(outbox_delivery_failures_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "failed {{topic}}",
                    ),
                ],
            ),
            (
                "Dead-lettered, refused and replayed",
                "short",
                [
                    (
                        f"sum by (job, topic) (increase(outbox_dead_lettered_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "dead-lettered {{job}} {{topic}}",
                    ),
                    (
                        f"sum by (job, topic) (increase(outbox_refused_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "refused {{job}} {{topic}}",
                    ),
                    (
                        f"sum by (job) (increase(outbox_replayed_total{{{SEL}}}"
                        f"[$__rate_interval]))",
                        "replayed {{job}}",
                    ),
                ],
            ),
            (
                "Route deliveries / s by outcome",
                "ops",
                [
                    (
                        f"sum by (relay, route, outcome) (rate(outbox_route_deliveries_total"
                        f"{{{SEL}}}[$__rate_interval]))",
                        "{{relay}} {{route}} {{outcome}}",
                    )
                ],
            ),
            (
                "Delivery time p99 (handler and route)",
                "s",
                [
                    (
                        f"histogram_quantile(0.99, sum by (topic, le) (rate("
                        f"outbox_delivery_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "{{topic}}",
                    ),
                    (
                        f"histogram_quantile(0.99, sum by (route, le) (rate("
                        f"outbox_route_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                        "route {{route}}",
                    ),
                ],
            ),
            (
                "Background jobs: seconds since last success",
                "s",
                [
                    (
                        # The metric's own `job` label is scraped as `exported_job`
                        # (Prometheus keeps `job` for the target).
                        f"time() - max by (job, exported_job) ("
                        f"job_last_success_timestamp_seconds{{{SEL}}})",
                        "{{job}} {{exported_job}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Mint queue and wallet",
        [
            (
                "Mint queue depth",
                "short",
                [('max(nft_mint_queue_depth{namespace="$namespace"})', "waiting")],
            ),
            (
                "Mint outcomes / s",
                "ops",
                [
                    (
                        'sum by (outcome) (rate(nft_mint_outcomes_total{namespace="$namespace"}'
                        "[$__rate_interval]))",
                        "{{outcome}}",
                    )
                ],
            ),
            (
                "MintTickets → on chain, p50 / p99",
                "s",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate("
                        'nft_mint_queue_to_chain_seconds_bucket{namespace="$namespace"}'
                        "[$__rate_interval])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                ],
            ),
            (
                "Minting wallet balance (lamports) and low flag",
                "short",
                [
                    (
                        'min(nft_minting_wallet_balance_lamports{namespace="$namespace"})',
                        "balance",
                    ),
                    ('max(nft_minting_wallet_low{namespace="$namespace"})', "low"),
                ],
            ),
            (
                "Tickets waiting for an operator, revocations",
                "short",
                [
                    (
                        'max by (state) (nft_mint_dead_lettered_tickets{namespace="$namespace"})',
                        "waiting {{state}}",
                    ),
                    (
                        'sum by (outcome) (increase(nft_revocations_total{namespace="$namespace"}'
                        "[$__rate_interval]))",
                        "revocations {{outcome}}",
                    ),
                ],
            ),
        ],
    ),
    (
        "Notifications",
        [
            (
                "SendNotification outcomes / s",
                "ops",
                [
                    (
                        "sum by (channel, outcome) (rate(notify_requests_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{channel}} {{outcome}}",
                    )
                ],
            ),
            (
                "Provider sends / s by outcome, failovers",
                "ops",
                [
                    (
                        "sum by (provider, outcome) (rate(notify_sends_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{provider}} {{outcome}}",
                    ),
                    (
                        "sum by (from_provider, to_provider) (rate(notify_failovers_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "failover {{from_provider}} → {{to_provider}}",
                    ),
                ],
            ),
            (
                "Notification states / s",
                "ops",
                [
                    (
                        "sum by (channel, status) (rate(notify_notifications_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{channel}} {{status}}",
                    )
                ],
            ),
            (
                "Queue depth and due → accepted p99",
                "short",
                [
                    ('max(notify_queue_depth{namespace="$namespace"})', "waiting"),
                    (
                        "histogram_quantile(0.99, sum by (le) (rate(notify_queue_seconds_bucket"
                        '{namespace="$namespace"}[$__rate_interval])))',
                        "p99 seconds",
                    ),
                ],
            ),
        ],
    ),
    (
        "Webhooks and payments",
        [
            (
                "Stripe webhooks / s by outcome",
                "ops",
                [
                    (
                        "sum by (outcome) (rate(payment_webhooks_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{outcome}}",
                    )
                ],
            ),
            (
                "Webhook processing p99",
                "s",
                [
                    (
                        "histogram_quantile(0.99, sum by (le) (rate("
                        'payment_webhook_processing_seconds_bucket{namespace="$namespace"}'
                        "[$__rate_interval])))",
                        "p99",
                    )
                ],
            ),
            (
                "notify receipts / s by provider and outcome",
                "ops",
                [
                    (
                        "sum by (provider, outcome) (rate(notify_receipts_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{provider}} {{outcome}}",
                    )
                ],
            ),
            (
                "Reconciliation: checked, discrepancies, late-capture refunds",
                "short",
                [
                    (
                        "sum(increase(payment_reconciliation_checked_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "checked",
                    ),
                    (
                        "sum by (action) (increase(payment_reconciliation_discrepancies_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{action}}",
                    ),
                    (
                        "sum(increase(payment_late_capture_refunds_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "late-capture refunds",
                    ),
                ],
            ),
        ],
    ),
    (
        "Integration syncs",
        [
            (
                "Active sync jobs by status",
                "short",
                [
                    (
                        "sum by (provider, status) (max by (provider, entity_type, status) ("
                        'integration_sync_jobs{namespace="$namespace"}))',
                        "{{provider}} {{status}}",
                    )
                ],
            ),
            (
                "Sync records / s by outcome",
                "ops",
                [
                    (
                        "sum by (provider, direction, outcome) (max by (provider, entity_type, "
                        "direction, outcome) (rate(integration_sync_records_total"
                        '{namespace="$namespace"}[$__rate_interval])))',
                        "{{provider}} {{direction}} {{outcome}}",
                    )
                ],
            ),
            (
                "Sync jobs finished by status",
                "short",
                [
                    (
                        "max by (provider, status) (increase(integration_sync_jobs_finished_total"
                        '{namespace="$namespace"}[$__rate_interval]))',
                        "{{provider}} {{status}}",
                    )
                ],
            ),
            (
                "Open sync dead letters",
                "short",
                [
                    (
                        "max by (provider, entity_type) (integration_sync_dead_letters"
                        '{namespace="$namespace"})',
                        "{{provider}} {{entity_type}}",
                    )
                ],
            ),
            (
                "Oldest queued sync job (waiting for a worker)",
                "s",
                [
                    (
                        'max(integration_sync_oldest_queued_seconds{namespace="$namespace"})',
                        "oldest queued",
                    )
                ],
            ),
            (
                "Sync tables read for the metrics (1 ok)",
                "short",
                [
                    (
                        'min by (pod) (integration_sync_metrics_read_ok{namespace="$namespace"})',
                        "{{pod}}",
                    )
                ],
            ),
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for index, (panel_title, unit, targets) in enumerate(row_panels):
            panels.append(
                {
                    "id": next_id,
                    "type": "timeseries",
                    "title": panel_title,
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                    "gridPos": {"h": 8, "w": 8, "x": (index % 3) * 8, "y": y + (index // 3) * 8},
                    "targets": [
                        {
                            "refId": chr(ord("A") + n),
                            "datasource": {"type": "prometheus", "uid": "${datasource}"},
                            "expr": expr,
                            "legendFormat": legend,
                        }
                        for n, (expr, legend) in enumerate(targets)
                    ],
                }
            )
            next_id += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "uid": "tickettoken-mesh",
        "title": "TicketToken Mesh",
        "description": "RED per RPC, providers, breakers and limiters, outbox and dead letters, "
        "the mint queue and wallet, notifications, webhooks, integration syncs (deploy/README.md, "
        "docs/runbooks).",
        "tags": ["tickettoken", "grpc"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                },
                {
                    "name": "namespace",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(grpc_server_started_total, namespace)",
                    "refresh": 2,
                },
                {
                    "name": "job",
                    "label": "service",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": 'label_values(grpc_server_started_total{namespace="$namespace"}, job)',
                    "refresh": 2,
                    "multi": True,
                    "includeAll": True,
                    "allValue": ".*",
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text() != text:
            sys.exit(f"{OUT.relative_to(REPO)} is stale: run python scripts/gen_dashboard.py")
        return
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
