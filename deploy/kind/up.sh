#!/usr/bin/env bash
# The whole mesh on a local kind cluster (deploy/k8s/overlays/kind): build the images, create
# the cluster if needed, load the images, create the namespace and the dev Secrets, apply, wait.
# Needs docker (or podman), kind and kubectl (the venv has kubectl: .venv/bin/kubectl).
# Not runnable on the machines this repository is developed on (no container engine): see
# deploy/README.md, "A local cluster (kind)".
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-tickettoken}
NS=tickettoken
PY=.venv/bin/python
KUBECTL=${KUBECTL:-$(command -v kubectl || echo .venv/bin/kubectl)}

make image
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
kind load docker-image --name "$CLUSTER" tickettoken-mesh:dev tickettoken-mesh-dev:dev

"$KUBECTL" get namespace "$NS" >/dev/null 2>&1 || "$KUBECTL" create namespace "$NS"
# Dev keys and placeholders only; the local .dev JWT key joins the JWKS so `make tokens` works.
"$PY" scripts/kind_secrets.py --dev-dir .dev | "$KUBECTL" -n "$NS" apply -f -
# Jobs are immutable: a finished migration Job of an older image goes before the new one.
"$KUBECTL" -n "$NS" delete job -l app.kubernetes.io/component=migrate --ignore-not-found
"$KUBECTL" apply -k deploy/k8s/overlays/kind
for job in payment nft notify integration; do
  "$KUBECTL" -n "$NS" wait --for=condition=complete --timeout=300s "job/$job-migrate"
done
for deployment in postgres redis localstripe mailpit payment nft notify integration; do
  "$KUBECTL" -n "$NS" rollout status --timeout=300s "deployment/$deployment"
done
cat <<'DONE'
The mesh runs in namespace tickettoken. Try (deploy/README.md, "A local cluster (kind)"):

  kubectl -n tickettoken port-forward svc/payment 50051 9101 &
  TOKEN=$(.venv/bin/python -m meshdev.tokens --role admin --aud tickettoken.payment)
  .venv/bin/grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d '{}' \
      127.0.0.1:50051 tickettoken.payment.v1.PaymentService/ListPayments
DONE
