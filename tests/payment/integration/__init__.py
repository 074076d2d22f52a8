"""Payment integration tests: real Postgres, Redis and localstripe, the service in-process."""
