"""Payment service tests (real Postgres, Redis, localstripe and gRPC)."""
