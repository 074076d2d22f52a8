"""Kit integration tests: real Postgres, Redis and in-process gRPC servers on port 0."""
