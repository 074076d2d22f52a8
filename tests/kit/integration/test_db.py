"""Database: schema-bound pools and the transaction helper's retries on real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from meshkit.db import Database


async def test_connect_creates_schema_and_binds_search_path(
    postgres_url: str, db_schema: str
) -> None:
    db = await Database.connect(postgres_url, schema=db_schema, max_size=2)
    try:
        await db.ping()
        await db.execute("CREATE TABLE things (id int)")
        rows = await db.fetch("SELECT schemaname FROM pg_tables WHERE tablename = 'things'")
        assert [r["schemaname"] for r in rows] == [db_schema]
    finally:
        await db.close()


async def test_invalid_schema_name_is_refused(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        await Database.connect(postgres_url, schema='x"; DROP SCHEMA public; --')


async def test_run_in_tx_retries_serialization_failure(database: Database) -> None:
    await database.execute("CREATE TABLE tally (v int NOT NULL)")
    attempts = {"a": 0, "b": 0}
    both_read = asyncio.Barrier(2)

    def work(name: str) -> Callable[[asyncpg.Connection], Awaitable[int]]:
        async def fn(conn: asyncpg.Connection) -> int:
            attempts[name] += 1
            total: int = await conn.fetchval("SELECT coalesce(sum(v), 0) FROM tally")
            if attempts[name] == 1:
                # Both first attempts read the empty table before either writes: classic write
                # skew, which SERIALIZABLE must refuse for one of them.
                await asyncio.wait_for(both_read.wait(), 5)
            await conn.execute("INSERT INTO tally VALUES ($1)", total + 1)
            return total

        return fn

    results = await asyncio.gather(
        database.run_in_tx(work("a"), isolation="serializable"),
        database.run_in_tx(work("b"), isolation="serializable"),
    )
    assert sorted(results) == [0, 1]
    assert sorted(attempts.values()) == [1, 2]
    rows = await database.fetch("SELECT v FROM tally ORDER BY v")
    assert [r["v"] for r in rows] == [1, 2]


async def test_run_in_tx_retries_deadlock(database: Database) -> None:
    await database.execute("CREATE TABLE acct (id int PRIMARY KEY, n int NOT NULL)")
    await database.execute("INSERT INTO acct VALUES (1, 0), (2, 0)")
    attempts = {"fwd": 0, "rev": 0}
    both_locked = asyncio.Barrier(2)

    def work(name: str, first: int, second: int) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        async def fn(conn: asyncpg.Connection) -> None:
            attempts[name] += 1
            # Detect the deadlock quickly instead of after the default second.
            await conn.execute("SET LOCAL deadlock_timeout = '50ms'")
            await conn.execute("UPDATE acct SET n = n + 1 WHERE id = $1", first)
            if attempts[name] == 1:
                await asyncio.wait_for(both_locked.wait(), 5)
            await conn.execute("UPDATE acct SET n = n + 1 WHERE id = $1", second)

        return fn

    await asyncio.gather(
        database.run_in_tx(work("fwd", 1, 2)),
        database.run_in_tx(work("rev", 2, 1)),
    )
    assert sum(attempts.values()) == 3
    rows = await database.fetch("SELECT n FROM acct ORDER BY id")
    assert [r["n"] for r in rows] == [2, 2]


async def test_run_in_tx_gives_up_and_does_not_retry_other_errors(database: Database) -> None:
    calls = 0

    async def conflict(conn: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$"
        )

    with pytest.raises(asyncpg.exceptions.SerializationError):
        await database.run_in_tx(conflict, max_attempts=3)
    assert calls == 3

    calls = 0

    async def broken(conn: asyncpg.Connection) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(asyncpg.exceptions.UndefinedTableError):
        await database.run_in_tx(broken)
    assert calls == 1


async def test_run_in_tx_rolls_back_on_error(database: Database) -> None:
    await database.execute("CREATE TABLE notes (v text)")

    async def fn(conn: asyncpg.Connection) -> None:
        await conn.execute("INSERT INTO notes VALUES ('x')")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await database.run_in_tx(fn)
    assert await database.fetch("SELECT * FROM notes") == []


async def test_pooled_connections_come_back_without_a_reset_query_and_without_state(
    postgres_url: str, db_schema: str
) -> None:
    """The pool skips asyncpg's reset round trip; transaction-local settings still end with
    their transaction, and an unfinished transaction is still rolled back on release."""
    from meshkit.db import PooledConnection

    db = await Database.connect(postgres_url, schema=db_schema, min_size=1, max_size=1)
    try:
        async with db.acquire() as conn:
            assert isinstance(conn, PooledConnection) and conn.get_reset_query() == ""
        async with db.transaction() as conn:
            await conn.execute("SELECT set_config('application_name', 'mine', true)")
        async with db.acquire() as conn:  # the same (only) connection
            assert await conn.fetchval("SELECT current_setting('application_name')") != "mine"
            tx = conn.transaction()
            await tx.start()
            await conn.execute("CREATE TABLE left_open (id int)")
        async with db.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT to_regclass('left_open')") is None
    finally:
        await db.close()
