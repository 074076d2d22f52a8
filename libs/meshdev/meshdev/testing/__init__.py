"""Test support for the mesh: embedded Postgres/Redis fixtures, in-process servers, tokens.

Enable the fixtures with `-p meshdev.testing.plugin` (the repository's pytest `addopts` does).
"""
