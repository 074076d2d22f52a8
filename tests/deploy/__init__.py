"""Deployment artefacts (Dockerfile, Kubernetes manifests) checked against the code."""
