"""The embedded PostgreSQL and Redis servers: start, answer, keep data, stop without leftovers."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from meshdev.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError, free_port


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not tmp_path: pytest's base dir is private and PostgreSQL runs as another user under root.
    path = Path(tempfile.mkdtemp(prefix="meshkit-embedded-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(path) in part for part in cmdline):
            found.append(proc)
    return found


async def test_postgres_answers_and_keeps_data_across_restarts(scratch: Path) -> None:
    server = EmbeddedPostgres(scratch / "pg")
    url = server.start()
    first_pid = server.pid
    assert first_pid is not None
    try:
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            await conn.execute("CREATE TABLE kept (v text)")
            await conn.execute("INSERT INTO kept VALUES ('survives')")
        finally:
            await conn.close()
    finally:
        server.stop()

    assert server.pid is None
    assert _gone(first_pid)
    assert not _processes_using(scratch / "pg" / "data")

    # Same data directory: no initdb, the row is still there.
    with server:
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("SELECT v FROM kept") == "survives"
        finally:
            await conn.close()
    assert not _processes_using(scratch / "pg" / "data")


async def test_postgres_fixed_port_and_start_failure(scratch: Path) -> None:
    port = free_port()
    server = EmbeddedPostgres(scratch / "pg", port=port)
    # The port is taken: start fails fast, tells why (from the server log), leaves nothing.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(EmbeddedServerError, match="already in use"):
            server.start(timeout=10)
    assert server.pid is None
    assert not _processes_using(scratch / "pg" / "data")

    with server:
        assert server.url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        conn = await asyncpg.connect(server.url)
        try:
            assert await conn.fetchval("SHOW port") == str(port)
        finally:
            await conn.close()


async def test_redis_answers_and_stops_cleanly(scratch: Path) -> None:
    server = EmbeddedRedis(scratch / "redis")
    url = server.start()
    pid = server.pid
    assert pid is not None
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.ping() is True
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
        server.stop()
    assert server.pid is None
    assert _gone(pid)
    # Stopping twice is harmless.
    server.stop()
