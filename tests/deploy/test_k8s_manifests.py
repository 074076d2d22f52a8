"""The Kubernetes manifests under deploy/ checked against the code they deploy.

Ports are the settings classes' defaults, every environment variable is a real setting, the
ConfigMaps pass the production start-up check, probes and security context have the agreed shape,
the shutdown timing fits in the termination grace period, network policies follow the call graph,
no Secret values live in the repository, and every path a kustomization names exists.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from integration_service.policy import POLICY as INTEGRATION_POLICY
from integration_service.settings import IntegrationSettings
from meshkit.auth import Policy
from meshkit.settings import KitSettings, load_settings
from nft_service.policy import POLICY as NFT_POLICY
from nft_service.settings import NftSettings
from notify_service.policy import POLICY as NOTIFY_POLICY
from notify_service.settings import NotifySettings
from payment_service.policy import POLICY as PAYMENT_POLICY
from payment_service.settings import PaymentSettings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse the manifests")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SETTINGS: dict[str, type[KitSettings]] = {
    "payment": PaymentSettings,
    "nft": NftSettings,
    "notify": NotifySettings,
    "integration": IntegrationSettings,
}
HTTP_SERVICES = {"payment", "nft", "notify", "integration"}
PART_OF = "tickettoken-mesh"
UID = 10001
POLICIES: dict[str, Policy] = {
    "payment": PAYMENT_POLICY,
    "nft": NFT_POLICY,
    "notify": NOTIFY_POLICY,
    "integration": INTEGRATION_POLICY,
}
# (caller, callee) over gRPC inside the mesh: every service whose svc: token a callee's policy
# table accepts for at least one RPC (a service calling itself needs no network path).
CALL_GRAPH = {
    (caller, callee)
    for callee, policy in POLICIES.items()
    for rule in policy.values()
    for caller in rule.services
    if caller != callee
}
METADATA_ENDPOINT = "169.254.169.254/32"
REQUIRED_KINDS = {
    "Deployment",
    "Service",
    "ServiceAccount",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}
ANYWHERE = "<anywhere>"
# Well-formed stand-ins for values that live only in the Secrets (the format each service's
# production check expects); other secret settings get "placeholder-<name>".
PLACEHOLDER_SECRETS = {
    "DATABASE_URL": "postgresql://svc:placeholder@postgres:5432/tickettoken",
    "REDIS_URL": "redis://redis:6379/0",
    "STRIPE_SECRET_KEY": "sk_live_placeholder",
    "STRIPE_WEBHOOK_SECRET": "whsec_placeholder",
    "NFT_DERIVATION_SECRET": "placeholder-derivation-secret-of-at-least-32-chars",
    "SOLANA_RPC_URL": "https://api.mainnet-beta.solana.com",
    "NOTIFY_UNSUBSCRIBE_SECRET": "placeholder-unsubscribe-secret-of-at-least-32-chars",
    "SENDGRID_API_KEY": "SG.placeholder.placeholder",
    "TWILIO_ACCOUNT_SID": "AC00000000000000000000000000000000",
    "INTEGRATION_KEK_VERSIONS": "1=arn:aws:kms:us-east-1:111122223333:key/placeholder",
}

Doc = dict[str, Any]


# --- loading ----------------------------------------------------------------------------------


@functools.cache
def _parse(path: Path) -> tuple[Doc, ...]:
    with path.open() as f:
        return tuple(doc for doc in yaml.safe_load_all(f) if doc)


def load_docs(path: Path) -> list[Doc]:
    """Every document of one YAML file (parsed once; each caller gets its own copy)."""
    return copy.deepcopy(list(_parse(path.resolve())))


def kustomization(folder: Path) -> Doc:
    (doc,) = load_docs(folder / "kustomization.yaml")
    return doc


def manifest_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


def service_objects(service: str) -> dict[str, Doc]:
    """kind -> object, from the files listed in deploy/k8s/base/<service>/kustomization.yaml."""
    folder = BASE / service
    found: dict[str, Doc] = {}
    for entry in kustomization(folder).get("resources", []):
        for doc in load_docs(folder / entry):
            kind = doc["kind"]
            if kind == "Service" and doc["metadata"]["name"].endswith("-headless"):
                kind = "HeadlessService"
            assert kind not in found, f"{service}: two {kind} objects"
            found[kind] = doc
    return found


def deployment(service: str) -> Doc:
    return service_objects(service)["Deployment"]


def pod_spec(service: str) -> Doc:
    spec: Doc = deployment(service)["spec"]["template"]["spec"]
    return spec


def container(service: str) -> Doc:
    (only,) = pod_spec(service)["containers"]
    return dict(only)


def container_port(service: str, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(service).get("ports", [])}
    return int(ports[name])


def probe_port(service: str, value: int | str) -> int:
    """A probe/targetPort value (number or container port name) as a number."""
    return value if isinstance(value, int) else container_port(service, value)


def generated_config_maps(folder: Path) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data as kustomize builds it from `folder` (generators with
    create/merge/replace behaviour, plain ConfigMap objects, nested resources and components)."""
    spec = kustomization(folder)
    maps: dict[str, dict[str, str]] = {}
    for entry in [*spec.get("resources", []), *spec.get("components", [])]:
        target = folder / entry
        nested = (
            generated_config_maps(target)
            if target.is_dir()
            else {
                d["metadata"]["name"]: dict(d.get("data", {}))
                for d in load_docs(target)
                if d["kind"] == "ConfigMap"
            }
        )
        for name, data in nested.items():
            assert name not in maps, f"ConfigMap {name} defined twice"
            maps[name] = data
    for gen in spec.get("configMapGenerator", []):
        if gen.get("files"):  # a file ConfigMap (the Grafana dashboard), never env settings
            assert not gen.get("literals") and not gen.get("envs"), gen["name"]
            continue
        lines = list(gen.get("literals", []))
        for env_file in gen.get("envs", []):
            lines += [
                line
                for line in (folder / env_file).read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        data = dict(line.split("=", 1) for line in lines)
        name, behavior = gen["name"], gen.get("behavior", "create")
        if behavior == "merge":
            maps[name] = {**maps[name], **data}
        elif behavior == "replace":
            assert name in maps
            maps[name] = data
        else:
            assert name not in maps, f"ConfigMap {name} generated twice"
            maps[name] = data
    return maps


def effective_env(service: str, maps: dict[str, dict[str, str]]) -> dict[str, str | None]:
    """What the container sees: envFrom ConfigMaps in order, then `env` (None = from a Secret)."""
    env: dict[str, str | None] = {}
    for source in container(service).get("envFrom", []):
        if "configMapRef" in source:
            env.update(maps[source["configMapRef"]["name"]])
    for var in container(service).get("env", []):
        env[var["name"]] = var.get("value")
    return env


def setting_names(service: str) -> set[str]:
    return {name.upper() for name in SETTINGS[service].model_fields}


def secret_setting_names(service: str) -> set[str]:
    fields = SETTINGS[service].model_fields
    return {name.upper() for name, info in fields.items() if "SecretStr" in repr(info.annotation)}


def required_secret_settings(service: str) -> set[str]:
    fields = SETTINGS[service].model_fields
    return {name.upper() for name, info in fields.items() if info.is_required()} & (
        secret_setting_names(service)
    )


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels + matchExpressions)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_labels(service: str) -> dict[str, str]:
    labels: dict[str, str] = deployment(service)["spec"]["template"]["metadata"]["labels"]
    return labels


def network_policies() -> list[Doc]:
    folder = K8S / "components" / "network-policies"
    return [
        doc
        for entry in kustomization(folder)["resources"]
        for doc in load_docs(folder / entry)
        if doc["kind"] == "NetworkPolicy"
    ]


def admitted(rule: Doc) -> Iterator[str]:
    """Who an ingress rule admits: mesh service names, `namespace:<name>` (pods of another
    namespace, possibly narrowed by a pod selector), or ANYWHERE."""
    peers = rule.get("from") or []
    if not peers:
        yield ANYWHERE
    for peer in peers:
        if "ipBlock" in peer:
            yield ANYWHERE
        elif "namespaceSelector" in peer:
            ns = peer["namespaceSelector"].get("matchLabels", {})
            name = ns.get("kubernetes.io/metadata.name")
            yield f"namespace:{name}" if name and len(ns) == 1 else ANYWHERE
        else:  # a pod selector alone: pods of our namespace
            yield from (s for s in SETTINGS if selects(peer["podSelector"], pod_labels(s)))


def admitted_by_port() -> dict[tuple[str, str], set[str]]:
    """(service, container port name) -> every source some policy admits to it."""
    result: dict[tuple[str, str], set[str]] = {}
    for policy in network_policies():
        targets = [s for s in SETTINGS if selects(policy["spec"]["podSelector"], pod_labels(s))]
        for rule in policy["spec"].get("ingress") or []:
            sources = set(admitted(rule))
            for port in rule.get("ports") or [{"port": "*"}]:
                for target in targets:
                    names = {p["name"]: p["containerPort"] for p in container(target)["ports"]}
                    value = port["port"]
                    if value == "*":
                        matched = list(names)
                    elif isinstance(value, int):
                        matched = [n for n, number in names.items() if number == value]
                    else:
                        matched = [value] if value in names else []
                    for name in matched:
                        result.setdefault((target, name), set()).update(sources)
    return result


# --- objects per service ----------------------------------------------------------------------


def test_base_has_one_folder_per_service() -> None:
    resources = kustomization(BASE)["resources"]
    assert sorted(resources) == sorted(SETTINGS)
    assert all((BASE / svc / "kustomization.yaml").is_file() for svc in SETTINGS)


@pytest.mark.parametrize("service", SETTINGS)
def test_service_has_deployment_service_account_hpa_pdb(service: str) -> None:
    objects = service_objects(service)
    assert set(objects) >= REQUIRED_KINDS
    for kind in REQUIRED_KINDS:
        meta = objects[kind]["metadata"]
        assert meta["name"] == service, kind
        assert meta["labels"]["app.kubernetes.io/name"] == service, kind
        assert meta["labels"]["app.kubernetes.io/part-of"] == PART_OF, kind
    spec = objects["Deployment"]["spec"]
    labels = pod_labels(service)
    assert labels == {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": PART_OF}
    assert selects(spec["selector"], labels)
    assert selects({"matchLabels": objects["Service"]["spec"]["selector"]}, labels)
    assert selects(objects["PodDisruptionBudget"]["spec"]["selector"], labels)
    # The HPA owns the replica count; a `replicas` field would be reset by every apply.
    assert "replicas" not in spec
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert pod_spec(service)["serviceAccountName"] == service
    assert objects["ServiceAccount"].get("automountServiceAccountToken") is False

    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert objects["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


@pytest.mark.parametrize("service", SETTINGS)
def test_container_runs_as_non_root_with_read_only_root(service: str) -> None:
    pod = pod_spec(service)
    assert pod["securityContext"]["runAsNonRoot"] is True
    ctx = container(service)["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == UID
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    seccomp = ctx.get("seccompProfile") or pod["securityContext"].get("seccompProfile")
    assert seccomp == {"type": "RuntimeDefault"}
    # The only writable path: /tmp on an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in container(service)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    resources = container(service)["resources"]
    for part in ("requests", "limits"):
        assert set(resources[part]) >= {"cpu", "memory"}, part


def test_image_runs_as_the_same_non_root_user_and_python_module() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert f"USER {UID}:{UID}" in lines or f"USER {UID}" in lines
    assert 'ENTRYPOINT ["python", "-m"]' in lines
    assert any(
        line.startswith("FROM python:3.11-slim") or "=python:3.11-slim" in line for line in lines
    )
    for service in SETTINGS:
        module = f"{service}_service"
        assert container(service)["args"] == [module]
        assert importlib.util.find_spec(f"{module}.__main__") is not None


# --- ports and probes -------------------------------------------------------------------------


@pytest.mark.parametrize("service", SETTINGS)
def test_ports_are_the_services_defaults(service: str) -> None:
    cls = SETTINGS[service]
    expected = {"grpc": cls.default_grpc_port, "metrics": cls.default_ops_port}
    if service in HTTP_SERVICES:
        expected["http"] = cls.default_http_port
    ports = {p["name"]: p["containerPort"] for p in container(service)["ports"]}
    assert ports == expected
    # The ConfigMaps may pin the ports, but only to the same numbers.
    env = effective_env(service, generated_config_maps(BASE))
    for var, name in (("GRPC_PORT", "grpc"), ("OPS_PORT", "metrics"), ("HTTP_PORT", "http")):
        if var in env:
            assert int(env[var] or 0) == expected[name], var

    service_ports = {p["name"]: p for p in service_objects(service)["Service"]["spec"]["ports"]}
    assert service_ports["grpc"]["port"] == cls.default_grpc_port
    assert probe_port(service, service_ports["grpc"]["targetPort"]) == cls.default_grpc_port
    assert ("http" in service_ports) == (service in HTTP_SERVICES)

    annotations = deployment(service)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(cls.default_ops_port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("service", SETTINGS)
def test_readiness_is_grpc_health_liveness_is_healthz(service: str) -> None:
    cls = SETTINGS[service]
    c = container(service)
    service_grpc = next(
        p["port"]
        for p in service_objects(service)["Service"]["spec"]["ports"]
        if p["name"] == "grpc"
    )
    readiness = c["readinessProbe"]
    assert set(readiness) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
    assert readiness["grpc"]["port"] == service_grpc == cls.default_grpc_port
    assert readiness["grpc"].get("service", "") == ""  # the whole server's status
    liveness = c["livenessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert probe_port(service, liveness["port"]) == cls.default_ops_port
    startup = c["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 30


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(K8S)))
@pytest.mark.parametrize("service", SETTINGS)
def test_termination_grace_covers_shutdown_delay_and_drain(service: str, folder: Path) -> None:
    env = effective_env(service, generated_config_maps(folder))
    delay, grace = float(env["SHUTDOWN_DELAY_S"] or 0), float(env["SHUTDOWN_GRACE_S"] or 0)
    assert delay > 0, "without a delay, clients see connection resets during rollouts"
    assert pod_spec(service)["terminationGracePeriodSeconds"] > delay + grace


# --- settings and secrets ---------------------------------------------------------------------


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(K8S)))
@pytest.mark.parametrize("service", SETTINGS)
def test_every_env_var_is_a_real_setting(service: str, folder: Path) -> None:
    maps = generated_config_maps(folder)
    names = set(effective_env(service, maps))
    for source in container(service).get("envFrom", []):
        assert "prefix" not in source
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] in maps
    assert names - setting_names(service) == set()


def production_folders() -> list[Path]:
    """The base and every overlay that runs with APP_ENV=production (all but the local kind)."""
    return [
        f
        for f in [BASE, *OVERLAYS]
        if generated_config_maps(f)["mesh-config"]["APP_ENV"] == "production"
    ]


def test_only_the_local_cluster_overlay_is_not_production() -> None:
    assert {f.name for f in [BASE, *OVERLAYS]} - {f.name for f in production_folders()} == {"kind"}


@pytest.mark.parametrize("folder", production_folders(), ids=lambda p: str(p.relative_to(K8S)))
@pytest.mark.parametrize("service", SETTINGS)
def test_config_maps_pass_the_production_start_up_check(
    service: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMaps + well-formed Secret values start in production (no refusal)."""
    for name in setting_names(service):
        monkeypatch.delenv(name, raising=False)
    for name, value in effective_env(service, generated_config_maps(folder)).items():
        placeholder = PLACEHOLDER_SECRETS.get(name, f"placeholder-{name.lower()}")
        monkeypatch.setenv(name, value if value is not None else placeholder)
    settings = load_settings(SETTINGS[service])  # raises, naming every problem, if refused
    assert settings.is_production
    assert settings.grpc_host == settings.ops_host == settings.http_host == "0.0.0.0"  # noqa: S104
    assert settings.bind_grpc_port == SETTINGS[service].default_grpc_port


@pytest.mark.parametrize("service", SETTINGS)
def test_secrets_come_from_secret_refs_and_read_only_files(service: str) -> None:
    c = container(service)
    env = {var["name"]: var for var in c.get("env", [])}
    for name, var in env.items():
        assert "value" not in var, f"{name}: literal values belong in the ConfigMaps"
        ref = var["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (f"{service}-secrets", name)
        assert not ref.get("optional"), name
    # Every setting the service cannot start without and that is a secret comes from the Secret.
    assert required_secret_settings(service) <= set(env)
    assert {"DATABASE_URL", "REDIS_URL"} <= set(env)

    volumes = {v["name"]: v for v in pod_spec(service)["volumes"]}
    files: dict[str, str] = {}  # mounted file path -> Secret name
    for mount in c["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert mount.get("readOnly") is True, mount["name"]
        assert secret.get("defaultMode", 0o644) & 0o007 == 0, "keys unreadable by others"
        for item in secret.get("items", []):
            files[str(PurePosixPath(mount["mountPath"]) / item["path"])] = secret["secretName"]
    config = effective_env(service, generated_config_maps(BASE))
    assert files[str(config["JWT_PUBLIC_KEYS"])] == "mesh-jwt-public-keys"
    assert files[str(config["JWT_SIGNING_KEY_FILE"])] == f"{service}-jwt-signing-key"
    assert config["JWT_SIGNING_KID"]
    # Any other key-file setting points at a file mounted from a Secret too.
    for name, value in config.items():
        if name.endswith("_FILE") and value:
            assert value in files, f"{name}={value} is not a mounted Secret file"


def test_no_secret_values_anywhere_in_deploy() -> None:
    secret_names = set().union(*(secret_setting_names(s) for s in SETTINGS))
    for path in manifest_files():
        for doc in load_docs(path):
            where = path.relative_to(REPO)
            if doc.get("kind") == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), where
            assert "secretGenerator" not in doc, where
            for gen in doc.get("configMapGenerator", []):
                keys = {line.split("=", 1)[0] for line in gen.get("literals", [])}
                assert not keys & secret_names, where
    instructions = [
        line
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    assert not any(name in line for line in instructions for name in secret_names)


# --- kustomize structure and network policies -------------------------------------------------


@pytest.mark.parametrize("folder", kustomization_dirs(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_entries_exist(folder: Path) -> None:
    spec = kustomization(folder)
    for entry in spec.get("resources", []):
        target = folder / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), entry
    for entry in spec.get("components", []):
        assert kustomization(folder / entry)["kind"] == "Component", entry
    for gen in spec.get("configMapGenerator", []):
        assert all((folder / env_file).is_file() for env_file in gen.get("envs", []))
    # No orphan manifests: every YAML file in the folder is listed (or is the kustomization).
    listed = {entry for entry in spec.get("resources", []) if (folder / entry).is_file()}
    present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    assert present == listed


def test_network_policies_are_generated_from_the_policy_tables() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_network_policies.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_call_graph_has_the_documented_calls() -> None:
    # The relays' calls (README, "purchase journey") and the reads the tables allow.
    assert {
        ("payment", "nft"),
        ("payment", "notify"),
        ("nft", "notify"),
        ("integration", "payment"),
        ("notify", "nft"),
        ("nft", "payment"),
        ("notify", "payment"),
        ("integration", "notify"),
    } <= CALL_GRAPH


def test_network_policies_follow_the_call_graph() -> None:
    policies = network_policies()
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny[0]["spec"] and "egress" not in deny[0]["spec"]
    access = admitted_by_port()
    grpc_pairs = {
        (source, target)
        for (target, port), sources in access.items()
        if port == "grpc"
        for source in sources
        if source in SETTINGS
    }
    assert grpc_pairs == CALL_GRAPH
    for service in SETTINGS:
        grpc_sources = access.get((service, "grpc"), set())
        assert ANYWHERE not in grpc_sources
        # The gateway only from its own namespace: a pod elsewhere that labels itself gets none.
        assert {s for s in grpc_sources if s not in SETTINGS} == {"namespace:tickettoken-gateway"}
        assert access[(service, "metrics")] == {"namespace:monitoring"}
        assert (ANYWHERE in access.get((service, "http"), set())) == (service in HTTP_SERVICES)


def egress_rules(service: str) -> list[Doc]:
    return [
        rule
        for policy in network_policies()
        if "Egress" in policy["spec"]["policyTypes"]
        and selects(policy["spec"]["podSelector"], pod_labels(service))
        for rule in policy["spec"].get("egress") or []
    ]


def _ports_of(rule: Doc) -> set[int | str]:
    return {p["port"] for p in rule.get("ports") or []}


@pytest.mark.parametrize("service", SETTINGS)
def test_egress_allows_dns_data_stores_mesh_calls_and_providers_only(service: str) -> None:
    rules = egress_rules(service)
    assert all(rule.get("ports") for rule in rules), "every egress rule names its ports"
    dns = [r for r in rules if 53 in _ports_of(r)]
    assert dns and all(
        peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kube-system"}
        for r in dns
        for peer in r["to"]
    )
    assert {p["protocol"] for r in dns for p in r["ports"]} == {"UDP", "TCP"}
    # Mesh calls: to exactly the callees the policy tables allow, on their gRPC ports.
    called = set()
    for rule in rules:
        for peer in rule.get("to") or []:
            if "podSelector" in peer and "namespaceSelector" not in peer:
                targets = [s for s in SETTINGS if selects(peer["podSelector"], pod_labels(s))]
                for target in targets:
                    assert _ports_of(rule) == {SETTINGS[target].default_grpc_port}
                    called.add(target)
    assert {(service, c) for c in called} == {e for e in CALL_GRAPH if e[0] == service}
    # Address ranges (data stores, providers) never include the metadata endpoint.
    ranges = [peer["ipBlock"] for r in rules for peer in r.get("to") or [] if "ipBlock" in peer]
    assert ranges
    for block in ranges:
        if ":" not in block["cidr"]:
            assert METADATA_ENDPOINT in block.get("except", []), block
        else:
            assert "fd00:ec2::254/128" in block.get("except", []), block
    allowed_ports = set().union(
        *(_ports_of(r) for r in rules if any("ipBlock" in p for p in r["to"]))
    )
    assert {5432, 6379, 443} <= allowed_ports


@pytest.mark.parametrize("service", SETTINGS)
def test_callers_dial_the_headless_services_of_their_callees(service: str) -> None:
    env = effective_env(service, generated_config_maps(BASE))
    objects = service_objects(service)
    headless = objects["HeadlessService"]
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == objects["Service"]["spec"]["selector"]
    assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]
    for caller, callee in CALL_GRAPH:
        if caller != service:
            continue
        port = SETTINGS[callee].default_grpc_port
        target = env[f"{callee.upper()}_GRPC_TARGET"]
        assert target == f"dns:///{callee}-headless:{port}", target


def test_dev_overlay_uses_base_and_network_policies() -> None:
    spec = kustomization(K8S / "overlays" / "dev")
    assert spec["namespace"] == "tickettoken"
    assert (K8S / "overlays" / "dev" / spec["resources"][0]).resolve() == BASE
    assert [(K8S / "overlays" / "dev" / c).resolve() for c in spec["components"]] == [
        K8S / "components" / "network-policies",
        K8S / "components" / "monitoring",
    ]


def test_dev_overlay_renders_with_kustomize() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "kubectl"), "kustomize", str(K8S / "overlays" / "dev")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    assert {d["metadata"].get("namespace") for d in docs} == {"tickettoken"}
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(SETTINGS)
    for d in deployments:
        (c,) = d["spec"]["template"]["spec"]["containers"]
        refs = [s["configMapRef"]["name"] for s in c["envFrom"] if "configMapRef" in s]
        assert refs and set(refs) <= config_maps, json.dumps(refs)  # hashed names resolved
        assert c["image"] == "tickettoken-mesh:dev"


# --- migrations -------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(K8S)))
@pytest.mark.parametrize("service", SETTINGS)
def test_deployments_leave_migrations_to_the_job(service: str, folder: Path) -> None:
    env = effective_env(service, generated_config_maps(folder))
    assert env["MIGRATE_ON_START"] == "false"


@pytest.mark.parametrize("service", SETTINGS)
def test_migration_job_runs_the_kit_entry_point_as_the_schema_owner(service: str) -> None:
    objects = service_objects(service)
    job = objects["Job"]
    assert job["metadata"]["name"] == f"{service}-migrate"
    pod = job["spec"]["template"]
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    (c,) = spec["containers"]
    assert c["image"] == container(service)["image"]
    assert c["args"] == ["meshkit.migrate", f"{service}_service"]
    assert importlib.util.find_spec("meshkit.migrate") is not None
    env = {var["name"]: var for var in c["env"]}
    ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (f"{service}-migrate-secrets", "DATABASE_URL")
    assert env["DB_SCHEMA"]["value"] == SETTINGS[service].service_name  # DB_SCHEMA's default
    ctx = c["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["runAsUser"] == UID
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    # Its pods are not the service's: no Service, PDB or Deployment selects them.
    labels = pod["metadata"]["labels"]
    assert not selects(objects["Deployment"]["spec"]["selector"], labels)
    assert not selects({"matchLabels": objects["Service"]["spec"]["selector"]}, labels)
    assert not selects(objects["PodDisruptionBudget"]["spec"]["selector"], labels)
    assert labels["app.kubernetes.io/part-of"] == PART_OF  # the egress policies apply
