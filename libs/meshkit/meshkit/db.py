"""PostgreSQL access for services: one asyncpg pool per process, one schema per service.

Every connection of a `Database` has `search_path` set to the service's schema at connect time
(startup parameter, so it also survives the pool's `RESET ALL` between users), which lets a
service's SQL say `payments` instead of `payment.payments` and keeps services out of each other's
tables. `run_in_tx` is the one place that knows which database errors mean "run it again".
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal, TypeVar

import asyncpg
import asyncpg.exceptions

__all__ = [
    "RETRYABLE_SQLSTATES",
    "Database",
    "Isolation",
    "create_schema",
    "quote_ident",
    "validate_schema_name",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

Isolation = Literal["read_committed", "repeatable_read", "serializable"]

# 40001 serialization_failure, 40P01 deadlock_detected: the transaction was rolled back as a
# whole and the same work may simply run again.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})

# Lower-case identifiers only: they need no quoting anywhere (search_path, SQL, psql), and a
# schema name never comes from a request anyway.
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_schema_name(schema: str) -> str:
    """Return `schema` if it is a plain lower-case identifier, else raise ValueError."""
    if not _SCHEMA_RE.match(schema) or schema.startswith("pg_"):
        raise ValueError(
            f"invalid schema name {schema!r}: use lower-case letters, digits and '_' "
            "(at most 63, not starting with a digit or 'pg_')"
        )
    return schema


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (for the few names the kit interpolates, always validated first)."""
    return '"' + name.replace('"', '""') + '"'


async def create_schema(conn: asyncpg.Connection, schema: str) -> None:
    """`CREATE SCHEMA IF NOT EXISTS`, tolerant of replicas doing the same at the same moment.

    IF NOT EXISTS checks the catalog before inserting, so two sessions can both pass the check and
    one then fails on the catalog's unique index; that loser has nothing left to do. An existing
    schema is detected first because CREATE SCHEMA checks the CREATE privilege on the database
    even when the schema exists, and production roles usually lack it.
    """
    validate_schema_name(schema)
    if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
        return
    statement = f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"
    with suppress(asyncpg.exceptions.UniqueViolationError, asyncpg.exceptions.DuplicateSchemaError):
        await conn.execute(statement)


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no types
    """A pool connection returned without asyncpg's reset query.

    asyncpg resets every connection it takes back (`SELECT pg_advisory_unlock_all(); CLOSE ALL;
    UNLISTEN *; RESET ALL`): one more round trip per acquire, several per RPC. The kit keeps no
    session state on pooled connections — settings are transaction-local (`set_config(..., true)`),
    nothing LISTENs, cursors live inside transactions, and the one session advisory lock (the
    migration lock) is released by its holder, which closes the connection if it cannot — so the
    query only costs. An open transaction is still rolled back on release, as always."""

    def get_reset_query(self) -> str:
        return ""


def _is_retryable(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES


class Database:
    """An asyncpg pool bound to one schema. Build it once at start-up and pass it in."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self.schema = schema

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        schema: str,
        min_size: int = 1,
        max_size: int = 10,
        command_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        application_name: str | None = None,
    ) -> Database:
        """Create the schema if missing, then a pool whose connections all use it."""
        validate_schema_name(schema)
        conn = await asyncpg.connect(url, timeout=connect_timeout)
        try:
            await create_schema(conn, schema)
        finally:
            await conn.close()
        settings = {"search_path": schema}
        if application_name:
            settings["application_name"] = application_name
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            command_timeout=command_timeout,
            timeout=connect_timeout,
            server_settings=settings,
            connection_class=PooledConnection,
        )
        logger.info(
            "database pool ready",
            extra={"schema": schema, "min_size": min_size, "max_size": max_size},
        )
        return cls(pool, schema)

    @property
    def pool(self) -> asyncpg.Pool:
        """The underlying pool, for the rare API this wrapper does not cover."""
        return self._pool

    @asynccontextmanager
    async def acquire(self, *, timeout: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """Borrow a connection for the duration of the block."""
        async with self._pool.acquire(timeout=timeout) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(
        self, *, isolation: Isolation = "read_committed", readonly: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside one transaction, committed when the block ends without error.

        No retries here: use `run_in_tx` when the work may hit serialization failures.
        """
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation=isolation, readonly=readonly),
        ):
            yield conn

    async def run_in_tx(
        self,
        fn: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        isolation: Isolation = "read_committed",
        readonly: bool = False,
        max_attempts: int = 5,
        base_backoff: float = 0.005,
        max_backoff: float = 0.25,
    ) -> T:
        """Run `fn(conn)` in a transaction; rerun it on serialization failures and deadlocks.

        `fn` may run several times, so it must only touch the database through `conn` (no
        provider calls, no in-memory side effects that would double up). The failure can surface
        at COMMIT as well as inside `fn`, so the whole transaction is the unit that is retried.
        """
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        attempt = 1
        while True:
            try:
                async with (
                    self._pool.acquire() as conn,
                    conn.transaction(isolation=isolation, readonly=readonly),
                ):
                    return await fn(conn)
            except asyncpg.PostgresError as exc:
                if not _is_retryable(exc) or attempt >= max_attempts:
                    raise
                # Full jitter: conflicting transactions that retry in lock-step conflict again.
                delay = random.uniform(0, min(max_backoff, base_backoff * 2 ** (attempt - 1)))
                logger.info(
                    "transaction conflict, retrying",
                    extra={
                        "sqlstate": exc.sqlstate,
                        "attempt": attempt,
                        "max_attempts": max_attempts,
                        "delay_s": round(delay, 4),
                    },
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def ping(self, timeout: float = 2.0) -> None:
        """Raise unless the database answers a trivial query within `timeout` seconds."""
        async with asyncio.timeout(timeout):
            async with self._pool.acquire() as conn:
                await conn.fetchval("SELECT 1")

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query on a pooled connection (autocommit) and return its rows."""
        async with self._pool.acquire() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def execute(self, query: str, *args: Any) -> str:
        """Run one statement on a pooled connection (autocommit); returns the status tag."""
        async with self._pool.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool, waiting up to `timeout` for borrowed connections to come back."""
        try:
            await asyncio.wait_for(self._pool.close(), timeout)
        except TimeoutError:
            logger.warning(
                "database pool did not close in time, terminating", extra={"schema": self.schema}
            )
            self._pool.terminate()


@asynccontextmanager
async def cli_database(schema: str) -> AsyncIterator[Database]:
    """For operator CLIs: a one-connection Database on DATABASE_URL (as the services read it),
    closed afterwards. Exits with status 2 and a message when DATABASE_URL is missing."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.stderr.write("DATABASE_URL is required\n")
        raise SystemExit(2)
    db = await Database.connect(url, schema=schema, min_size=1, max_size=1)
    try:
        yield db
    finally:
        await db.close()
