"""Transactional outbox against real PostgreSQL: exactly-once claims, backoff, DLQ, replay."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from google.protobuf import struct_pb2, wrappers_pb2
from prometheus_client import CollectorRegistry

from meshkit.context import request_id_var
from meshkit.db import Database
from meshkit.errors import Unavailable
from meshkit.outbox import (
    OutboxEvent,
    OutboxRelay,
    backoff_delay,
    list_dead_letters,
    publish,
    purge_delivered,
    replay_dead_letters,
)

TOPIC = "nft.mint_tickets"


class CeilingRandom(random.Random):
    """Jitter that always picks the top of the range, so backoff timings are deterministic."""

    def uniform(self, a: float, b: float) -> float:
        return b


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return value or 0.0


async def publish_many(db: Database, n: int, topic: str = TOPIC) -> list[uuid.UUID]:
    async with db.transaction() as conn:
        return [
            await publish(conn, topic, wrappers_pb2.StringValue(value=f"e{i}"), key=f"order-{i}")
            for i in range(n)
        ]


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest_asyncio.fixture(loop_scope="session")
async def second_database(postgres_url: str, database: Database) -> AsyncIterator[Database]:
    """Another pool on the same schema: the second relay replica."""
    db = await Database.connect(postgres_url, schema=database.schema)
    yield db
    await db.close()


async def test_two_relays_deliver_every_event_exactly_once(
    database: Database, second_database: Database
) -> None:
    ids = set(await publish_many(database, 200))
    deliveries: Counter[uuid.UUID] = Counter()
    by_relay: Counter[str] = Counter()

    def handler_for(name: str) -> Callable[[OutboxEvent], Awaitable[None]]:
        async def handle(event: OutboxEvent) -> None:
            deliveries[event.id] += 1
            by_relay[name] += 1
            await asyncio.sleep(0.001)  # let the other relay interleave

        return handle

    registry = CollectorRegistry()
    relays = [
        OutboxRelay(db, handler_for(name), registry=registry, batch_size=10, poll_interval=0.01)
        for name, db in (("a", database), ("b", second_database))
    ]
    tasks = [asyncio.create_task(r.run()) for r in relays]

    async def all_delivered() -> bool:
        return len(deliveries) == len(ids)

    await wait_for(all_delivered, 30)
    for relay in relays:
        relay.stop()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)

    assert set(deliveries) == ids
    assert max(deliveries.values()) == 1, "an event was delivered twice"
    assert by_relay["a"] > 0 and by_relay["b"] > 0, by_relay
    assert sample(registry, "outbox_delivered_total", topic=TOPIC) == 200
    assert sample(registry, "outbox_pending") == 0
    rows = await database.fetch("SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL")
    assert rows[0]["n"] == 0


async def test_failing_handler_backs_off_then_dead_letters_and_replay_delivers(
    database: Database,
) -> None:
    (event_id,) = await publish_many(database, 1)
    registry = CollectorRegistry()
    attempts_seen: list[float] = []

    async def down(event: OutboxEvent) -> None:
        attempts_seen.append(time.monotonic())
        raise Unavailable("nft service unavailable")

    relay = OutboxRelay(
        database,
        down,
        registry=registry,
        max_attempts=3,
        base_backoff=0.1,
        max_backoff=10.0,
        rng=CeilingRandom(),
    )

    assert await relay.run_once() == 1
    row = (await database.fetch("SELECT attempts, last_error FROM outbox"))[0]
    assert row["attempts"] == 1
    assert "UNAVAILABLE" in row["last_error"]
    # Backing off: not due yet, so an immediate batch claims nothing.
    assert await relay.run_once() == 0

    async def attempted(n: int) -> bool:
        await relay.run_once()
        return len(attempts_seen) >= n

    await wait_for(lambda: attempted(2))
    await wait_for(lambda: attempted(3))
    gaps = [b - a for a, b in itertools.pairwise(attempts_seen)]
    # Exponential: 0.1 s, then 0.2 s (the jitter is pinned to its ceiling).
    # Never before the backoff; upper bounds leave room for polling on a busy CI machine.
    assert 0.1 <= gaps[0] < 0.1 + 1.0
    assert 0.2 <= gaps[1] < 0.2 + 1.0

    assert await database.fetch("SELECT * FROM outbox") == []
    (dead,) = await list_dead_letters(database)
    assert dead.id == event_id
    assert dead.attempts == 3
    assert dead.last_error is not None and "nft service unavailable" in dead.last_error
    assert dead.unpack(wrappers_pb2.StringValue).value == "e0"
    assert sample(registry, "outbox_delivery_failures_total", topic=TOPIC) == 3
    assert sample(registry, "outbox_dead_lettered_total", topic=TOPIC) == 1

    # The operator fixes the consumer and replays.
    assert await replay_dead_letters(database, [event_id], registry=registry) == 1
    assert await list_dead_letters(database) == []
    delivered: list[OutboxEvent] = []

    async def up(event: OutboxEvent) -> None:
        delivered.append(event)

    fixed = OutboxRelay(database, up, registry=registry)
    assert await fixed.run_once() == 1
    assert [e.id for e in delivered] == [event_id]
    assert delivered[0].attempts == 0
    assert sample(registry, "outbox_replayed_total") == 1
    assert sample(registry, "outbox_delivered_total", topic=TOPIC) == 1


async def test_handler_timeout_counts_as_failure(database: Database) -> None:
    await publish_many(database, 1)

    async def hangs(event: OutboxEvent) -> None:
        await asyncio.sleep(10)

    relay = OutboxRelay(database, hangs, registry=CollectorRegistry(), handler_timeout=0.05)
    assert await relay.run_once() == 1
    rows = await database.fetch("SELECT attempts, last_error, delivered_at FROM outbox")
    assert rows[0]["attempts"] == 1
    assert rows[0]["delivered_at"] is None
    assert "TimeoutError" in rows[0]["last_error"]


async def test_publish_in_rolled_back_transaction_leaves_nothing(database: Database) -> None:
    with pytest.raises(RuntimeError, match="rolled back"):
        async with database.transaction() as conn:
            await publish(conn, TOPIC, wrappers_pb2.StringValue(value="never"))
            raise RuntimeError("state change failed, rolled back")
    assert await database.fetch("SELECT * FROM outbox") == []

    # Outside a transaction, publish refuses (the event could outlive its state change).
    async with database.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await publish(conn, TOPIC, wrappers_pb2.StringValue(value="loose"))


async def test_event_carries_type_headers_and_request_id(database: Database) -> None:
    token = request_id_var.set("req-7")
    try:
        async with database.transaction() as conn:
            event_id = await publish(
                conn,
                TOPIC,
                wrappers_pb2.StringValue(value="payload"),
                key="order-9",
                headers={"tenant": "venue-3"},
            )
    finally:
        request_id_var.reset(token)
    seen: list[OutboxEvent] = []

    async def handle(event: OutboxEvent) -> None:
        seen.append(event)

    await OutboxRelay(database, handle, registry=CollectorRegistry()).run_once()
    (event,) = seen
    assert event.id == event_id
    assert event.key == "order-9"
    assert event.type_name == "google.protobuf.StringValue"
    assert dict(event.headers) == {"tenant": "venue-3", "x-request-id": "req-7"}
    assert event.unpack(wrappers_pb2.StringValue).value == "payload"
    with pytest.raises(TypeError):
        event.unpack(struct_pb2.Struct)


async def test_pending_gauge_batches_and_purge(database: Database) -> None:
    await publish_many(database, 5)
    registry = CollectorRegistry()
    order: list[str] = []

    async def handle(event: OutboxEvent) -> None:
        order.append(event.unpack(wrappers_pb2.StringValue).value)

    relay = OutboxRelay(database, handle, registry=registry, batch_size=2)
    assert await relay.run_once() == 2
    assert sample(registry, "outbox_pending") == 3
    assert await relay.run_once() == 2
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0
    assert order == ["e0", "e1", "e2", "e3", "e4"]  # creation order, ties broken by insert order
    assert sample(registry, "outbox_pending") == 0
    assert (registry.get_sample_value("outbox_delivery_seconds_count", {"topic": TOPIC})) == 5

    assert await purge_delivered(database, older_than_seconds=3600) == 0
    await database.execute("UPDATE outbox SET delivered_at = now() - interval '2 hours'")
    assert await purge_delivered(database, older_than_seconds=3600, batch=2) == 5
    assert await database.fetch("SELECT * FROM outbox") == []


async def test_stop_returns_promptly_from_an_idle_relay(database: Database) -> None:
    async def handle(event: OutboxEvent) -> None:
        pass

    relay = OutboxRelay(database, handle, registry=CollectorRegistry(), poll_interval=30)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    relay.stop()
    await asyncio.wait_for(task, 2)
    assert time.monotonic() - started < 1


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    top = CeilingRandom()
    assert [backoff_delay(n, 0.5, 300, top) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(30, 0.5, 300, top) == 300
    assert backoff_delay(10_000, 0.5, 300, top) == 300  # no overflow
    rng = random.Random(7)
    delays = [backoff_delay(5, 0.5, 300, rng) for _ in range(200)]
    assert all(0 <= d <= 8 for d in delays)
    assert min(delays) < 1 and max(delays) > 7  # spread over the whole range
