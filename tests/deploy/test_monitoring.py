"""The monitoring component against promtool and against the running services.

* the PrometheusRule's groups pass `promtool check rules` (syntax, templates) and the unit tests
  in tests/deploy/promtool/alerts_test.yaml (`promtool test rules`);
* every alert has a severity, a summary, a description and a runbook_url naming an existing
  docs/runbooks/<alert>.md with the three parts (means, confirm, do), and every runbook has its
  alert;
* the dashboard JSON is what scripts/gen_dashboard.py generates;
* one ServiceMonitor per service selects that service's Service and scrapes its metrics port;
* every metric a panel or a rule queries is exported by the services: payment, nft, notify and
  integration start in-process (the same App as their processes, relays pointed at each other),
  answer one RPC each, and their /metrics pages are scraped (integration's until its sync
  metrics, read from the sync tables at scrape time, have been read once); histograms are
  queried through _bucket/_sum/_count, counters through _total, and the labels a query filters
  on exist on the scraped series.

promtool is installed into the venv by `make tools` (scripts/install_promtool.py); the tests
fail, never skip, when it is missing.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from integration_service.app import DEFINITION as INTEGRATION
from meshdev.testing.servers import TestTokens, channel_for, running_app
from meshkit.server import App
from nft_service.app import DEFINITION as NFT
from notify_service.app import DEFINITION as NOTIFY
from payment_service.app import DEFINITION as PAYMENT
from tickettoken.integration.v1 import integration_pb2, integration_pb2_grpc
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy/k8s/components/monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards/tickettoken-mesh.json"
RUNBOOKS = REPO / "docs/runbooks"
PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
SERVICES = ("payment", "nft", "notify", "integration")
# Labels Prometheus adds to every scraped series (ServiceMonitor targets).
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}
# The metric's own `job` label (meshkit.jobs) is scraped as exported_job.
RENAMED = {"exported_job": "job"}
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def promtool() -> str:
    found = Path(sys.executable).parent / "promtool"
    path = str(found) if found.exists() else shutil.which("promtool")
    assert path, "promtool is missing: run `make tools` (scripts/install_promtool.py)"
    return path


def rule_groups() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    assert doc["kind"] == "PrometheusRule"
    groups: list[dict[str, Any]] = doc["spec"]["groups"]
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


# --- PromQL: the metrics and label matchers an expression uses -------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*")


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) for every `metric{...}` selector, and bare metric names
    with no matchers."""
    found: list[tuple[str, set[str]]] = []
    for metric, body in _SELECTOR.findall(expr):
        if metric and metric not in PROMQL_WORDS:
            matchers = _MATCHER.findall(_STRING.sub('""', body))
            found.append((metric, {name for name, _ in matchers}))
    # Bare names: drop selectors' braces, strings, durations, groupings and function calls.
    rest = _SELECTOR.sub(" ", _STRING.sub(" ", expr))
    rest = _GROUPING.sub(" ", rest)
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    for match in _IDENT.finditer(rest):
        name = match.group(0)
        following = rest[match.end() :].lstrip()
        if following.startswith("(") or name in PROMQL_WORDS or name.startswith("$"):
            continue
        if rest[max(0, match.start() - 1)] == "$":  # a Grafana variable
            continue
        found.append((name, set()))
    return found


def test_selector_parsing() -> None:
    expr = (
        'sum by (job, le) (rate(x_bucket{job=~"$job", le="0.5"}[5m])) / '
        "histogram_quantile(0.9, y_bucket) and on (job) z offset 10m or vector(1) > 2"
    )
    assert sorted((m, sorted(ls)) for m, ls in selectors(expr)) == [
        ("x_bucket", ["job", "le"]),
        ("y_bucket", []),
        ("z", []),
    ]


# --- rules ------------------------------------------------------------------------------------


def _write_rules(folder: Path, *, annotations: bool) -> Path:
    groups = rule_groups()
    if not annotations:
        groups = [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in groups
        ]
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    path = _write_rules(tmp_path, annotations=True)
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_alerts_behave_as_the_promtool_unit_tests_say(tmp_path: Path) -> None:
    # The unit tests check labels and timing; annotations (templates) are checked above, so
    # they are left out here rather than repeated verbatim in every expected alert.
    _write_rules(tmp_path, annotations=False)
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    result = subprocess.run(
        [promtool(), "test", "rules", PROMTOOL_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname:\s*(\w+)", PROMTOOL_TESTS.read_text()))
    assert tested == {a["alert"] for a in alerts()}, "every alert has a promtool test"


def test_the_issue_s_alerts_exist() -> None:
    names = {a["alert"] for a in alerts()}
    assert names >= {
        "MeshCircuitBreakerOpen",
        "MeshOutboxDeadLettersGrowing",
        "MeshOutboxBacklog",
        "MeshGrpcErrorRatio",
        "MeshLatencySLOBurnRate",
        "NftMintingWalletLow",
        "MeshGuardSharedStateDown",
        "MeshWebhookSignatureFailures",
        "MeshIdempotencyLockTakeovers",
    }


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: f"{a['alert']}-{a['labels']['severity']}")
def test_every_alert_has_severity_text_and_a_runbook(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    notes = alert["annotations"]
    assert notes["summary"] and notes["description"]
    url = notes["runbook_url"]
    assert url.endswith(f"/docs/runbooks/{alert['alert']}.md"), url
    page = RUNBOOKS / f"{alert['alert']}.md"
    assert page.is_file(), page
    text = page.read_text()
    assert text.startswith(f"# {alert['alert']}\n")
    for part in ("**Means.**", "**Confirm.**", "**Do.**"):
        assert part in text, f"{page.name}: {part}"


def test_every_runbook_belongs_to_an_alert() -> None:
    names = {a["alert"] for a in alerts()}
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == names
    index = (RUNBOOKS / "README.md").read_text()
    assert all(f"[{name}.md]({name}.md)" in index for name in names)


def test_recording_rules_used_are_defined() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    used = {
        m
        for expr in [*(r["expr"] for r in rules()), *dashboard_exprs()]
        for m, _ in selectors(expr)
        if ":" in m
    }
    assert used <= recorded, used - recorded


# --- dashboard and ServiceMonitors -------------------------------------------------------------


def test_dashboard_is_generated() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/gen_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    titles = [p["title"] for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"]
    assert titles == [
        "RED per RPC",
        "Providers and breakers",
        "Outbox and dead letters",
        "Mint queue and wallet",
        "Notifications",
        "Webhooks and payments",
        "Integration syncs",
    ]


def test_one_service_monitor_per_service_scrapes_its_metrics_port() -> None:
    spec = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    monitors = {}
    for entry in spec["resources"]:
        for doc in yaml.safe_load_all((MONITORING / entry).read_text()):
            if doc["kind"] == "ServiceMonitor":
                monitors[doc["metadata"]["name"]] = doc
    assert sorted(monitors) == sorted(SERVICES)
    for service, monitor in monitors.items():
        (svc,) = [
            d
            for d in yaml.safe_load_all(
                (REPO / "deploy/k8s/base" / service / "service.yaml").read_text()
            )
            if d["metadata"]["name"] == service
        ]
        labels = svc["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"
        ports = {p["name"] for p in svc["spec"]["ports"]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "metrics" and "metrics" in ports
        assert endpoint["path"] == "/metrics"


# --- every queried metric is exported ------------------------------------------------------------


@dataclass
class Scraped:
    names: set[str]
    labels: dict[str, set[str]]  # sample name -> label names seen (empty if no sample yet)


def _sample_names(family: Any) -> set[str]:
    kind, name = family.type, family.name
    if kind == "counter":
        return {f"{name}_total", f"{name}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def scraped(
    postgres_url: str,
    redis_url: str,
    dev_dir: Path,
    tokens: TestTokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Scraped]:
    work = tmp_path_factory.mktemp("monitoring")
    base = {"postgres_url": postgres_url, "redis_url": redis_url, "dev_dir": dev_dir}
    async with AsyncExitStack() as stack:
        notify = await stack.enter_async_context(running_app(NOTIFY, **base))
        nft = await stack.enter_async_context(
            running_app(
                NFT,
                **base,
                notify_grpc_target=f"127.0.0.1:{notify.grpc_port}",
                solana_local_state_file=work / "chain.jsonl",
            )
        )
        payment = await stack.enter_async_context(
            running_app(
                PAYMENT,
                **base,
                nft_grpc_target=f"127.0.0.1:{nft.grpc_port}",
                notify_grpc_target=f"127.0.0.1:{notify.grpc_port}",
                stripe_secret_key="sk_test_tickettoken_local",
                stripe_webhook_secret="whsec_test_tickettoken_local",
                stripe_api_base="http://127.0.0.1:9",
                reconcile_interval_s=0,
            )
        )
        integration = await stack.enter_async_context(
            running_app(
                INTEGRATION,
                **base,
                notify_grpc_target=f"127.0.0.1:{notify.grpc_port}",
                integration_sync_schedule_interval_s=0,
            )
        )
        apps: dict[str, App] = {
            "payment": payment,
            "nft": nft,
            "notify": notify,
            "integration": integration,
        }

        def md(service: str) -> tuple[tuple[str, str], ...]:
            return tokens.metadata(tokens.user("ops-1", ["admin"], aud=f"tickettoken.{service}"))

        # One RPC each, so the gRPC families carry samples with their real labels.
        async with channel_for(payment) as ch:
            await payment_pb2_grpc.PaymentServiceStub(ch).ListPayments(
                payment_pb2.ListPaymentsRequest(), metadata=md("payment")
            )
        async with channel_for(nft) as ch:
            await nft_pb2_grpc.NftServiceStub(ch).GetMintingWallet(
                nft_pb2.GetMintingWalletRequest(), metadata=md("nft")
            )
        async with channel_for(notify) as ch:
            await notify_pb2_grpc.NotifyServiceStub(ch).ListNotifications(
                notify_pb2.ListNotificationsRequest(), metadata=md("notify")
            )
        async with channel_for(integration) as ch:
            await integration_pb2_grpc.IntegrationServiceStub(ch).ListProviders(
                integration_pb2.ListProvidersRequest(), metadata=md("integration")
            )
        names: set[str] = set()
        labels: dict[str, set[str]] = {}
        async with httpx.AsyncClient(timeout=10) as http:

            async def metrics_page(app: App) -> str:
                page = await http.get(f"http://127.0.0.1:{app.ops_port}/metrics")
                page.raise_for_status()
                return page.text

            # The sync metrics answer the previous scrape's read of the tables: scrape until
            # one has been read, so their families carry samples with their labels.
            for _ in range(400):
                if "integration_sync_metrics_read_ok 1.0" in await metrics_page(integration):
                    break
                await asyncio.sleep(0.05)
            for app in apps.values():
                text = await metrics_page(app)
                for family in text_string_to_metric_families(text):
                    names |= _sample_names(family)
                    for sample in family.samples:
                        names.add(sample.name)
                        labels.setdefault(sample.name, set()).update(sample.labels)
        yield Scraped(names, labels)


def _queries() -> list[tuple[str, str]]:
    return [(f"rule {r.get('alert') or r.get('record')}", r["expr"]) for r in rules()] + [
        ("dashboard", expr) for expr in dashboard_exprs()
    ]


async def test_every_queried_metric_is_exported(scraped: Scraped) -> None:
    missing, bad_labels = [], []
    for where, expr in _queries():
        for metric, matched in selectors(expr):
            if ":" in metric:  # a recording rule (checked in test_recording_rules_used_are_defined)
                continue
            if metric not in scraped.names:
                missing.append(f"{where}: {metric}")
                continue
            seen = scraped.labels.get(metric)
            if seen is not None:  # it has samples: the labels a query matches on must exist
                wanted = {RENAMED.get(name, name) for name in matched} - TARGET_LABELS
                if wanted - seen:
                    bad_labels.append(f"{where}: {metric} has no label {wanted - seen}")
    assert not missing, "\n".join(missing)
    assert not bad_labels, "\n".join(bad_labels)


async def test_scrape_saw_the_rpcs_and_the_kit_families(scraped: Scraped) -> None:
    assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket"} <= scraped.names
    assert {"grpc_type", "grpc_service", "grpc_method", "grpc_code"} <= scraped.labels[
        "grpc_server_handled_total"
    ]
    assert "idempotency_lock_takeovers_total" in scraped.names


async def test_scrape_saw_integration_s_sync_metrics_read_from_its_tables(scraped: Scraped) -> None:
    assert {
        "integration_sync_jobs",
        "integration_sync_records_total",
        "integration_sync_jobs_finished_total",
        "integration_sync_dead_letters",
        "integration_sync_oldest_queued_seconds",
        "integration_sync_metrics_read_ok",
    } <= scraped.names
    # The gauges start at 0 for every writer's and reader's provider and entity type.
    assert {"provider", "entity_type", "status"} <= scraped.labels["integration_sync_jobs"]
    assert {"provider", "entity_type"} <= scraped.labels["integration_sync_dead_letters"]
