"""Fixtures for embedded PostgreSQL and Redis.

Session-wide servers (one real PostgreSQL, one real redis-server per test run, started in about a
second) and per-test isolation on top of them: every test that asks for `database` gets its own
schema with the kit's tables, dropped afterwards, and `redis_client` gets a flushed database.

Set `TEST_DATABASE_URL` / `TEST_REDIS_URL` to run against existing servers instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from meshdev.embedded import EmbeddedPostgres, EmbeddedRedis
from meshkit.db import Database, quote_ident
from meshkit.migrations import KIT_MIGRATIONS, migrate

__all__ = [
    "REDIS_TEST_DB",
    "database",
    "db_schema",
    "postgres_url",
    "redis_client",
    "redis_url",
]

# Tests use their own logical database so that flushing it never touches what in-process
# services keep in database 0 of the same server.
REDIS_TEST_DB = 15


def _scratch_dir(prefix: str) -> Path:
    # Under the system temp dir rather than pytest's tmp_path: PostgreSQL runs as another user
    # when we are root and must traverse the path, and pytest's base dir is private (0700).
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server for the whole session (embedded unless TEST_DATABASE_URL)."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    base = _scratch_dir("meshkit-pg-")
    server = EmbeddedPostgres(base, fsync=False)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server for the whole session (embedded unless TEST_REDIS_URL)."""
    external = os.environ.get("TEST_REDIS_URL")
    if external:
        yield external
        return
    base = _scratch_dir("meshkit-redis-")
    server = EmbeddedRedis(base)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session")
async def db_schema(postgres_url: str) -> AsyncIterator[str]:
    """A fresh schema name for one test; the schema (if created) is dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def database(postgres_url: str, db_schema: str) -> AsyncIterator[Database]:
    """A `Database` on the test's own schema, with the kit's migrations applied."""
    db = await Database.connect(postgres_url, schema=db_schema, min_size=1, max_size=10)
    try:
        await migrate(db, db_schema, [KIT_MIGRATIONS])
        yield db
    finally:
        await db.close()


@pytest_asyncio.fixture(loop_scope="session")
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client on the test database (REDIS_TEST_DB), flushed before and after."""
    client = aioredis.Redis.from_url(redis_url, db=REDIS_TEST_DB)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()
