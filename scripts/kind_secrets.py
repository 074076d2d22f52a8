"""Print the Secrets the kind overlay needs, with dev values, as YAML for `kubectl apply -f -`.

Usage::

    python scripts/kind_secrets.py [--dev-dir .dev] | kubectl -n tickettoken apply -f -

For a local cluster only (deploy/k8s/overlays/kind): every value is generated here or is a dev
placeholder, and the overlay runs with APP_ENV=dev, which refuses none of them. It writes the
same Secrets a real environment creates by hand (deploy/README.md, section 2):

* `<svc>-secrets` and `<svc>-migrate-secrets`: the in-cluster Postgres and Redis (one database
  user for both roles: trust auth, dev only), localstripe's test keys, a random nft derivation
  secret; provider settings the dev overlay does not use are empty;
* `<svc>-jwt-signing-key`: a fresh ES256 key per service (kid `<svc>-1`);
* `mesh-jwt-public-keys`: a JWKS with those four public keys and the local dev key of
  `--dev-dir` (kid of meshkit's dev key), so tokens from `make tokens` work against the cluster;
* `nft-payer-key`: a fresh Solana keypair (solana-keygen JSON), airdropped by the local chain.

tests/deploy/test_render.py renders the kind overlay and checks that these Secrets provide every
key its pods reference.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from solders.keypair import Keypair

from meshkit.auth import ensure_dev_keys, load_private_key

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("payment", "nft", "notify", "integration")
DATABASE_URL = "postgresql://tickettoken@postgres:5432/tickettoken"
REDIS_DB = {"payment": 0, "nft": 1, "notify": 2, "integration": 3}
LABELS = {"app.kubernetes.io/part-of": "tickettoken-mesh", "tickettoken.io/environment": "kind"}


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": LABELS},
        "type": "Opaque",
        "stringData": data,
    }


def _jwk(public_key: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(public_key, as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256"}


def _referenced_keys(service: str) -> list[str]:
    """Keys of `<service>-secrets` that the service's base Deployment reads."""
    path = REPO / "deploy" / "k8s" / "base" / service / "deployment.yaml"
    (deployment,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    keys = []
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        for var in c.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("name") == f"{service}-secrets":
                keys.append(ref["key"])
    return keys


def secrets_for_kind(dev_dir: Path) -> list[dict[str, Any]]:
    settings: dict[str, dict[str, str]] = {
        "payment": {
            "STRIPE_SECRET_KEY": "sk_test_tickettoken_kind",
            "STRIPE_WEBHOOK_SECRET": "whsec_tickettoken_kind",
        },
        "nft": {
            "NFT_DERIVATION_SECRET": secrets.token_urlsafe(48),
            "SOLANA_RPC_URL": "",  # SOLANA_CHAIN=local in the overlay
        },
        # dev: a key generated under DEV_DIR (no email provider is configured in kind)
        "notify": {"NOTIFY_UNSUBSCRIBE_SECRET": ""},
        "integration": {"INTEGRATION_KEK_VERSIONS": ""},  # dev: a local KEK under DEV_DIR
    }
    out: list[dict[str, Any]] = []
    keys = []
    for service in SERVICES:
        redis_url = f"redis://redis:6379/{REDIS_DB[service]}"
        # Any other key the Deployment references (providers the dev overlay leaves off): empty.
        data = {key: "" for key in _referenced_keys(service)}
        data.update(DATABASE_URL=DATABASE_URL, REDIS_URL=redis_url, **settings[service])
        out.append(_secret(f"{service}-secrets", data))
        out.append(_secret(f"{service}-migrate-secrets", {"DATABASE_URL": DATABASE_URL}))
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        out.append(_secret(f"{service}-jwt-signing-key", {"private.pem": pem}))
        keys.append(_jwk(private.public_key(), f"{service}-1"))
    dev = ensure_dev_keys(dev_dir)
    keys.append(_jwk(load_private_key(dev.private_key_path).public_key(), dev.kid))
    out.append(_secret("mesh-jwt-public-keys", {"jwks.json": json.dumps({"keys": keys})}))
    payer = Keypair()
    out.append(_secret("nft-payer-key", {"payer.json": json.dumps(list(bytes(payer)))}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-dir", type=Path, default=Path(".dev"))
    args = parser.parse_args()
    sys.stdout.write(yaml.safe_dump_all(secrets_for_kind(args.dev_dir), sort_keys=False))


if __name__ == "__main__":
    main()
