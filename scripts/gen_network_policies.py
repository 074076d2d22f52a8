"""Generate the NetworkPolicies from the services' policy tables, so the two cannot drift.

Usage::

    python scripts/gen_network_policies.py           # rewrite the component's files
    python scripts/gen_network_policies.py --check   # fail if the committed files differ

Ingress to a service's gRPC port is allowed from exactly the services its policy table lets in
(`allow(..., services=[...])` in services/<svc>/<svc>_service/policy.py: a `svc:<caller>` token
is accepted for at least one RPC), plus the API gateway's pods, pinned by namespace. Egress is
denied except DNS, the mesh calls the same tables allow, Postgres and Redis, and each service's
providers; the cloud metadata endpoint is excluded from every address range that is allowed.
tests/deploy/test_k8s_manifests.py checks the files against this script and the tables.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "deploy/k8s/components/network-policies"
SERVICES = ("payment", "nft", "notify", "integration")
PART_OF = "tickettoken-mesh"
GATEWAY_NAMESPACE = "tickettoken-gateway"
GATEWAY_LABEL = {"tickettoken.io/grpc-gateway": "true"}
MONITORING_NAMESPACE = "monitoring"
HTTP_SERVICES = ("payment", "nft", "notify", "integration")
# Cloud instance metadata (AWS, GCP, Azure, ...): credentials live there; never reachable.
METADATA_V4 = "169.254.169.254/32"
METADATA_V6 = "fd00:ec2::254/128"
ANY_V4 = {"cidr": "0.0.0.0/0", "except": [METADATA_V4]}
ANY_V6 = {"cidr": "::/0", "except": [METADATA_V6]}
DATA_STORE_PORTS = (5432, 6379)  # Postgres (or PgBouncer), Redis
# Outside systems each service calls (adapters), by port: HTTPS APIs; notify also SMTP.
PROVIDER_PORTS: dict[str, tuple[int, ...]] = {
    "payment": (443,),  # Stripe
    "nft": (443,),  # Solana JSON-RPC over HTTPS; NFT metadata fetched for verification
    "notify": (443, 25, 465, 587),  # SendGrid, Twilio; SMTP relays (plain, TLS, submission)
    "integration": (443,),  # Stripe, Square, Mailchimp, QuickBooks, AWS KMS
}
GRPC_PORTS = {"payment": 50051, "nft": 50052, "notify": 50053, "integration": 50054}

Doc = dict[str, Any]


def callers() -> dict[str, set[str]]:
    """callee -> the mesh services its policy table accepts service tokens from (not itself)."""
    sys.path[:0] = [str(REPO / "services" / s) for s in SERVICES]
    result: dict[str, set[str]] = {}
    for service in SERVICES:
        policy = importlib.import_module(f"{service}_service.policy").POLICY
        allowed = {caller for rule in policy.values() for caller in rule.services}
        unknown = allowed - set(SERVICES)
        if unknown:
            raise SystemExit(f"{service} policy names unknown services: {sorted(unknown)}")
        result[service] = allowed - {service}
    return result


def _labels(name: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/part-of": PART_OF}
    if name:
        labels = {"app.kubernetes.io/name": name, **labels}
    return labels


def _policy(name: str, comment: str, spec: Doc) -> tuple[str, Doc, str]:
    doc = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": _labels()},
        "spec": spec,
    }
    return name, doc, comment


def _pods(name: str | None = None) -> Doc:
    return {"matchLabels": _labels(name)}


def _ports(*ports: int | str, protocol: str = "TCP") -> list[Doc]:
    return [{"protocol": protocol, "port": port} for port in ports]


def policies() -> list[tuple[str, Doc, str]]:
    graph = callers()
    out = [
        _policy(
            "default-deny",
            "Nothing reaches a mesh pod and a mesh pod reaches nothing unless a policy below "
            "allows it.",
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        )
    ]
    for callee in SERVICES:
        if not graph[callee]:
            continue
        sources = sorted(graph[callee])
        out.append(
            _policy(
                f"allow-grpc-{callee}",
                f"{callee}'s gRPC port from {', '.join(sources)}: the services whose svc: tokens "
                f"{callee}'s policy table accepts.",
                {
                    "podSelector": _pods(callee),
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": _pods(s)} for s in sources],
                            "ports": _ports("grpc"),
                        }
                    ],
                },
            )
        )
    out.append(
        _policy(
            "allow-grpc-from-gateway",
            "The users' entry point: buyer apps and venue admins call the gRPC APIs through the "
            f'API gateway\'s pods (label tickettoken.io/grpc-gateway: "true") in the namespace '
            f"{GATEWAY_NAMESPACE} only; a pod elsewhere that sets the label gets nothing. "
            "Rename the namespace in your overlay with a patch if yours differs.",
            {
                "podSelector": _pods(),
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": GATEWAY_NAMESPACE
                                    }
                                },
                                "podSelector": {"matchLabels": GATEWAY_LABEL},
                            }
                        ],
                        "ports": _ports("grpc"),
                    }
                ],
            },
        )
    )
    out.append(
        _policy(
            "allow-metrics-from-monitoring",
            f"Prometheus in the `{MONITORING_NAMESPACE}` namespace scrapes /metrics on every "
            "mesh pod's ops port.",
            {
                "podSelector": _pods(),
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {
                                        "kubernetes.io/metadata.name": MONITORING_NAMESPACE
                                    }
                                }
                            }
                        ],
                        "ports": _ports("metrics"),
                    }
                ],
            },
        )
    )
    out.append(
        _policy(
            "allow-public-http",
            "The public HTTP ports, from anywhere: payment's, notify's and integration's provider "
            "webhooks (signature-checked by the handler, not by the network), integration's OAuth "
            "callback, notify's one-click unsubscribe (a signed token) and nft's token metadata "
            "(read by wallets and marketplaces).",
            {
                "podSelector": {
                    "matchLabels": _labels(),
                    "matchExpressions": [
                        {
                            "key": "app.kubernetes.io/name",
                            "operator": "In",
                            "values": list(HTTP_SERVICES),
                        }
                    ],
                },
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": _ports("http")}],
            },
        )
    )
    out.append(
        _policy(
            "allow-egress-dns",
            "Every mesh pod resolves names with the cluster DNS (kube-system).",
            {
                "podSelector": _pods(),
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                                },
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [*_ports(53, protocol="UDP"), *_ports(53)],
                    }
                ],
            },
        )
    )
    out.append(
        _policy(
            "allow-egress-data-stores",
            "Postgres (or PgBouncer) on 5432 and Redis on 6379, in the cluster or outside it "
            "(managed databases), never the metadata endpoint.",
            {
                "podSelector": _pods(),
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"ipBlock": ANY_V4}, {"ipBlock": ANY_V6}],
                        "ports": _ports(*DATA_STORE_PORTS),
                    }
                ],
            },
        )
    )
    for caller in SERVICES:
        callees = sorted(c for c in SERVICES if caller in graph[c])
        rules: list[Doc] = [
            {"to": [{"podSelector": _pods(c)}], "ports": _ports(GRPC_PORTS[c])} for c in callees
        ]
        rules.append(
            {
                "to": [{"ipBlock": ANY_V4}, {"ipBlock": ANY_V6}],
                "ports": _ports(*PROVIDER_PORTS[caller]),
            }
        )
        mesh = (
            f"the gRPC ports of {', '.join(callees)} (its policy-table callees), "
            if callees
            else ""
        )
        out.append(
            _policy(
                f"allow-egress-{caller}",
                f"{caller} calls {mesh}and its providers on "
                f"{', '.join(str(p) for p in PROVIDER_PORTS[caller])}, never the metadata "
                "endpoint.",
                {"podSelector": _pods(caller), "policyTypes": ["Egress"], "egress": rules},
            )
        )
    return out


HEADER = """# Generated by scripts/gen_network_policies.py from the policy tables: do not edit.
"""

KUSTOMIZATION = """\
# Opt-in network policies (a kustomize Component, as in microservices-demo), generated
# by scripts/gen_network_policies.py from the services' policy tables (do not edit;
# `make test` fails when they drift). Add `components: [../../components/network-policies]` to
# an overlay. Needs a CNI that enforces NetworkPolicy (Calico, Cilium, ...).
#
# Ingress: default deny; gRPC only from the callers each service's policy table accepts and
# from the API gateway's namespace; metrics from `monitoring`; the public HTTP ports from
# anywhere. Egress: default deny; DNS, Postgres and Redis, the mesh calls the tables allow and
# each service's providers; the cloud metadata endpoint never. Kubelet probes come from the
# node and are always allowed.
"""


def render() -> dict[str, str]:
    files: dict[str, str] = {}
    names = []
    for name, doc, comment in policies():
        lines = [f"# {line}" for line in _wrap(comment)]
        files[f"{name}.yaml"] = (
            HEADER + "\n".join(lines) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=100)
        )
        names.append(f"{name}.yaml")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": names,
    }
    files["kustomization.yaml"] = KUSTOMIZATION + yaml.safe_dump(kustomization, sort_keys=False)
    return files


def _wrap(text: str, width: int = 96) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    files = render()
    present = {p.name for p in OUT.glob("*.yaml")}
    if args.check:
        stale = sorted(
            name
            for name in set(files) | present
            if name not in files
            or not (OUT / name).is_file()
            or (OUT / name).read_text() != files[name]
        )
        if stale:
            sys.exit(
                "network policies differ from the policy tables: "
                + ", ".join(stale)
                + " (run python scripts/gen_network_policies.py)"
            )
        return
    for name in present - set(files):
        (OUT / name).unlink()
    for name, text in files.items():
        (OUT / name).write_text(text)


if __name__ == "__main__":
    main()
