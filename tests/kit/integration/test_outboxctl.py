"""The operator CLI for outbox dead letters, run as a process against a real schema."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from google.protobuf import wrappers_pb2
from prometheus_client import CollectorRegistry

from meshkit.db import Database
from meshkit.outbox import OutboxEvent, OutboxRelay, publish


async def ctl(postgres_url: str, schema: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.outboxctl", "--schema", schema, *args,
        env={**os.environ, "DATABASE_URL": postgres_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_list_and_replay_dead_letters(
    database: Database, db_schema: str, postgres_url: str
) -> None:
    async with database.transaction() as conn:
        event_id = await publish(conn, "t.failed", wrappers_pb2.StringValue(value="x"))

    async def broken(_event: OutboxEvent) -> None:
        raise RuntimeError("consumer down")

    relay = OutboxRelay(database, broken, registry=CollectorRegistry(), max_attempts=1)
    await relay.run_once()

    code, out, _ = await ctl(postgres_url, db_schema, "list")
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["id"] == str(event_id) and row["topic"] == "t.failed"
    assert "consumer down" in row["last_error"]

    code, out, _ = await ctl(postgres_url, db_schema, "replay", str(event_id))
    assert code == 0 and out.strip() == "replayed 1"
    delivered: list[str] = []

    async def fixed(event: OutboxEvent) -> None:
        delivered.append(str(event.id))

    await OutboxRelay(database, fixed, registry=CollectorRegistry()).run_once()
    assert delivered == [str(event_id)]
    assert (await ctl(postgres_url, db_schema, "list"))[1] == ""


async def test_missing_database_url_is_named() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshkit.outboxctl", "--schema", "x", "list",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"DATABASE_URL is required" in err


async def test_requeue_makes_events_stuck_in_backoff_due(
    database: Database, db_schema: str, postgres_url: str
) -> None:
    async with database.transaction() as conn:
        event_id = await publish(conn, "t.slow", wrappers_pb2.StringValue(value="x"))

    async def broken(_event: OutboxEvent) -> None:
        raise RuntimeError("consumer down")

    # One failure with a long backoff, and the event is old enough to count as stuck.
    relay = OutboxRelay(
        database, broken, registry=CollectorRegistry(), base_backoff=3600, max_backoff=3600
    )
    await relay.run_once()
    await database.execute(
        "UPDATE outbox SET created_at = now() - interval '1 hour', "
        "available_at = now() + interval '1 hour' WHERE id = $1",
        event_id,
    )
    code, out, _ = await ctl(postgres_url, db_schema, "requeue", "--older-than", "60", "--dry-run")
    assert code == 0 and out.splitlines() == [str(event_id), "would requeue 1"]
    code, out, _ = await ctl(postgres_url, db_schema, "requeue", "--older-than", "60")
    assert code == 0 and out.splitlines()[-1] == "requeued 1"
    delivered: list[str] = []

    async def fixed(event: OutboxEvent) -> None:
        delivered.append(str(event.id))

    await OutboxRelay(database, fixed, registry=CollectorRegistry()).run_once()
    assert delivered == [str(event_id)]
