"""Test support shipped with the kit: embedded Postgres/Redis fixtures, servers, tokens."""
