"""Tests of the nft service (real Postgres, Redis and LiteSVM; the service over gRPC)."""
