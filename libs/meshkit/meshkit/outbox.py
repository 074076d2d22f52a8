"""Transactional outbox: events commit with the state change they announce, then get delivered.

`publish(conn, topic, payload)` inserts an event inside the caller's transaction, so an event
exists if and only if its state change committed. An `OutboxRelay` (one per replica, any number
at once) repeatedly claims a batch with `SELECT … FOR UPDATE SKIP LOCKED` and hands each event to a
pluggable handler (typically: call the next service's gRPC method with the event id as its
idempotency key). The claim is the row lock held by the batch's transaction, so concurrent relays
never see the same event; if a relay dies mid-batch its locks vanish with its connection and the
events are delivered again later. Delivery is therefore *at least once*: consumers deduplicate
on the event id.

A failed delivery is retried with capped exponential backoff and full jitter; after
`max_attempts` failures the event moves to `outbox_dead_letters` (same transaction), where an
operator can list and replay it. A handler that knows no retry can help (the consumer refused
the event for good) raises `Undeliverable`: the event is dead-lettered at once, with the reason.
`requeue_stuck` makes events waiting out a long backoff (after a consumer outage was fixed) due
at once. Delivery order follows creation order within a batch, but a retried event is overtaken
by later ones: consumers must not rely on ordering. With `concurrency` > 1 a batch's events are
handed over several at a time, those with the same key (aggregate) still one after another in
creation order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from meshkit.context import current_request_id
from meshkit.db import Database
from meshkit.errors import MeshError
from meshkit.jobs import PollingWorker

__all__ = [
    "REQUEST_ID_HEADER",
    "DeadLetter",
    "OutboxEvent",
    "OutboxMetrics",
    "OutboxRelay",
    "Outgoing",
    "Undeliverable",
    "backoff_delay",
    "list_dead_letters",
    "publish",
    "publish_many",
    "purge_delivered",
    "replay_dead_letters",
    "requeue_stuck",
]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)

REQUEST_ID_HEADER = "x-request-id"
MAX_ERROR_LENGTH = 2000

_EVENT_COLUMNS = "id, topic, key, payload, type_name, headers, attempts, created_at"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event as the relay hands it to the handler."""

    id: uuid.UUID
    topic: str
    key: str | None
    payload: bytes
    type_name: str
    """Full proto name of the payload, e.g. `tickettoken.nft.v1.MintTicketsRequest`."""
    headers: Mapping[str, str]
    attempts: int
    """Delivery attempts made before this one."""
    created_at: datetime

    def unpack(self, msg_cls: type[M]) -> M:
        """Parse the payload as `msg_cls`, refusing a message of another type."""
        expected = msg_cls.DESCRIPTOR.full_name
        if expected != self.type_name:
            raise TypeError(f"outbox event {self.id} holds {self.type_name}, not {expected}")
        return msg_cls.FromString(self.payload)


@dataclass(frozen=True, slots=True)
class DeadLetter(OutboxEvent):
    """An event that exhausted its attempts, with the last error it met."""

    last_error: str | None = None
    dead_lettered_at: datetime | None = field(default=None)


class Undeliverable(Exception):
    """Raised by a relay handler when retrying cannot help (the consumer refused the event for
    good, e.g. INVALID_ARGUMENT): the relay dead-letters the event on this attempt with
    `reason` as its last error, instead of after `max_attempts`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _event_fields(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "topic": row["topic"],
        "key": row["key"],
        "payload": bytes(row["payload"]),
        "type_name": row["type_name"],
        "headers": json.loads(row["headers"]) if row["headers"] else {},
        "attempts": row["attempts"],
        "created_at": row["created_at"],
    }


def _rowcount(tag: str) -> int:
    return int(tag.rsplit(" ", 1)[-1])


# -- publishing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event to stage: see `publish` for the fields."""

    topic: str
    payload: Message
    key: str | None = None
    headers: Mapping[str, str] | None = None
    event_id: uuid.UUID | None = None


async def publish(
    conn: asyncpg.Connection,
    topic: str,
    payload: Message,
    *,
    key: str | None = None,
    headers: Mapping[str, str] | None = None,
    event_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert an event into the outbox within the caller's open transaction; return its id.

    `key` is a routing/partitioning hint for the handler (e.g. the order id); `headers` travel
    with the event, and the current request id is added so a delivery can be traced back to the
    RPC that caused it.
    """
    [event_id] = await publish_many(conn, [Outgoing(topic, payload, key, headers, event_id)])
    return event_id


async def publish_many(conn: asyncpg.Connection, events: Sequence[Outgoing]) -> list[uuid.UUID]:
    """`publish` for several events in one INSERT (a worker's round of state changes); return
    their ids in order."""
    if not events:
        return []
    if not conn.is_in_transaction():
        # Outside a transaction the event could commit without its state change, or vice versa.
        raise RuntimeError("outbox.publish must run inside the transaction of the state change")
    base: dict[str, str] = {}
    request_id = current_request_id()
    if request_id:
        base[REQUEST_ID_HEADER] = request_id
    ids, topics, keys, payloads, types, headers = [], [], [], [], [], []
    for event in events:
        if not event.topic:
            raise ValueError("topic must not be empty")
        ids.append(event.event_id or uuid.uuid4())
        topics.append(event.topic)
        keys.append(event.key)
        payloads.append(event.payload.SerializeToString(deterministic=True))
        types.append(event.payload.DESCRIPTOR.full_name)
        headers.append(json.dumps({**base, **(event.headers or {})}, sort_keys=True))
    await conn.execute(
        # ORDER BY the list's order: `seq` (delivery order) is assigned in that order.
        "INSERT INTO outbox (id, topic, key, payload, type_name, headers) "
        "SELECT id, topic, key, payload, type_name, headers::jsonb FROM unnest("
        "$1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[]) "
        "WITH ORDINALITY AS e(id, topic, key, payload, type_name, headers, n) ORDER BY n",
        ids,
        topics,
        keys,
        payloads,
        types,
        headers,
    )
    return ids


# -- metrics -----------------------------------------------------------------------------------


class OutboxMetrics:
    """The outbox's Prometheus metrics on one registry (shared by every relay using it)."""

    # Relays sharing a registry must share the collectors: registering a name twice fails.
    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, OutboxMetrics] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        self.delivered = Counter(
            "outbox_delivered_total", "Outbox events delivered.", ["topic"], registry=registry
        )
        self.failures = Counter(
            "outbox_delivery_failures_total",
            "Failed outbox delivery attempts.",
            ["topic"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "outbox_dead_lettered_total",
            "Outbox events moved to the dead-letter table.",
            ["topic"],
            registry=registry,
        )
        self.refused = Counter(
            "outbox_refused_total",
            "Outbox events dead-lettered at once because the handler found them undeliverable "
            "(a consumer's permanent refusal); also counted in outbox_dead_lettered_total.",
            ["topic"],
            registry=registry,
        )
        self.replayed = Counter(
            "outbox_replayed_total",
            "Dead-lettered events moved back to the outbox.",
            registry=registry,
        )
        self.pending = Gauge(
            "outbox_pending", "Undelivered outbox events (at the last batch).", registry=registry
        )
        self.delivery_seconds = Histogram(
            "outbox_delivery_seconds",
            "Time spent in the delivery handler per attempt.",
            ["topic"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> OutboxMetrics:
        """The metrics on `registry`, created on first use."""
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics


# -- relay -------------------------------------------------------------------------------------


def backoff_delay(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after `attempts` failures: full jitter over a capped exponential."""
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 62))
    return (rng or random).uniform(0.0, ceiling)


_CLAIM_SQL = f"""
SELECT {_EVENT_COLUMNS}
FROM outbox
WHERE delivered_at IS NULL AND available_at <= now()
ORDER BY created_at, seq
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

# clock_timestamp(), not now(): now() is the batch transaction's start, possibly long ago.
_DELIVERED_SQL = """
UPDATE outbox SET delivered_at = clock_timestamp(), attempts = attempts + 1, last_error = NULL
WHERE id = $1
"""

_RETRY_SQL = """
UPDATE outbox
SET attempts = $2, last_error = $3, available_at = clock_timestamp() + make_interval(secs => $4)
WHERE id = $1
"""

_DEAD_LETTER_SQL = """
WITH moved AS (
    DELETE FROM outbox WHERE id = $1
    RETURNING id, topic, key, payload, type_name, headers, created_at
)
INSERT INTO outbox_dead_letters
    (id, topic, key, payload, type_name, headers, attempts, last_error, created_at)
SELECT id, topic, key, payload, type_name, headers, $2, $3, created_at FROM moved
ON CONFLICT (id) DO UPDATE SET
    attempts = EXCLUDED.attempts,
    last_error = EXCLUDED.last_error,
    dead_lettered_at = now()
"""

_PENDING_SQL = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, Undeliverable):
        text = f"undeliverable: {exc.reason}"
    elif isinstance(exc, TimeoutError):
        text = f"TimeoutError: handler did not finish within {timeout:g}s"
    elif isinstance(exc, MeshError):
        text = f"{exc.code.name} {exc.reason}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_LENGTH]


class OutboxRelay(PollingWorker):
    """Delivers outbox events to `handler`; safe to run on any number of replicas at once.

    Start with `asyncio.create_task(relay.run())`; `stop()` lets the current batch finish and
    makes `run()` return. A batch that fails as a whole (the database is unreachable) is retried
    with the worker's capped backoff. `concurrency` is how many of a batch's events are in the
    handler at once (events with the same key never at the same time).
    """

    def __init__(
        self,
        db: Database,
        handler: Callable[[OutboxEvent], Awaitable[None]],
        *,
        registry: CollectorRegistry,
        batch_size: int = 50,
        max_attempts: int = 8,
        base_backoff: float = 0.5,
        max_backoff: float = 300.0,
        poll_interval: float = 0.5,
        handler_timeout: float = 30.0,
        name: str = "outbox",
        rng: random.Random | None = None,
        concurrency: int = 1,
    ) -> None:
        if batch_size < 1 or max_attempts < 1 or concurrency < 1:
            raise ValueError("batch_size, max_attempts and concurrency must be >= 1")
        self._rng = rng or random.Random()
        super().__init__(name, self._step, idle_s=poll_interval, rng=self._rng)
        self._db = db
        self._handler = handler
        self.metrics = OutboxMetrics.for_registry(registry)
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self.handler_timeout = handler_timeout
        self.concurrency = concurrency

    async def run(self) -> None:
        """Deliver batches until `stop()`; sleep `poll_interval` when there is nothing to do."""
        await super().run()
        with contextlib.suppress(Exception):  # best effort: the pool may be closing
            await self._refresh_pending()

    async def _step(self) -> bool:
        return await self.run_once() >= self.batch_size

    async def run_once(self) -> int:
        """Claim and deliver one batch; return the number of events claimed."""
        async with self._db.transaction() as conn:
            rows = await conn.fetch(_CLAIM_SQL, self.batch_size)
            events = [OutboxEvent(**_event_fields(row)) for row in rows]
            if self.concurrency == 1 or len(events) < 2:
                for event in events:
                    await self._deliver(conn, event)
            else:
                await self._deliver_concurrently(conn, events)
        await self._refresh_pending()
        return len(rows)

    async def _deliver_concurrently(
        self, conn: asyncpg.Connection, events: Sequence[OutboxEvent]
    ) -> None:
        # One lane per key (an event without a key is a lane of its own), in creation order;
        # at most `concurrency` lanes in the handler at once. The batch's connection takes one
        # statement at a time: the lanes' bookkeeping writes take turns.
        lanes: dict[object, list[OutboxEvent]] = {}
        for event in events:
            lanes.setdefault(event.key if event.key is not None else event.id, []).append(event)
        slots = asyncio.Semaphore(self.concurrency)
        writes = asyncio.Lock()

        async def lane(queue: list[OutboxEvent]) -> None:
            async with slots:
                for event in queue:
                    await self._deliver(conn, event, writes)

        # A task group: if a bookkeeping write fails, the other lanes stop before the batch's
        # transaction rolls back under them.
        async with asyncio.TaskGroup() as group:
            for queue in lanes.values():
                group.create_task(lane(queue))

    async def _refresh_pending(self) -> None:
        # Read after commit: inside the batch's transaction the count would still include other
        # relays' uncommitted batches, and a stale value could be the last one written.
        async with self._db.acquire() as conn:
            self.metrics.pending.set(await conn.fetchval(_PENDING_SQL))

    async def _deliver(
        self,
        conn: asyncpg.Connection,
        event: OutboxEvent,
        writes: asyncio.Lock | None = None,
    ) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.handler_timeout):
                await self._handler(event)
        except Exception as exc:
            self.metrics.delivery_seconds.labels(event.topic).observe(time.perf_counter() - started)
            self.metrics.failures.labels(event.topic).inc()
            async with writes or contextlib.nullcontext():
                await self._failed(conn, event, exc)
            return
        self.metrics.delivery_seconds.labels(event.topic).observe(time.perf_counter() - started)
        async with writes or contextlib.nullcontext():
            await conn.execute(_DELIVERED_SQL, event.id)
        self.metrics.delivered.labels(event.topic).inc()

    async def _failed(self, conn: asyncpg.Connection, event: OutboxEvent, exc: Exception) -> None:
        attempts = event.attempts + 1
        error = _describe(exc, self.handler_timeout)
        log = {
            "relay": self.name,
            "event_id": str(event.id),
            "topic": event.topic,
            "attempts": attempts,
            "error": error,
        }
        refused = isinstance(exc, Undeliverable)
        if refused or attempts >= self.max_attempts:
            await conn.execute(_DEAD_LETTER_SQL, event.id, attempts, error)
            self.metrics.dead_lettered.labels(event.topic).inc()
            if refused:
                self.metrics.refused.labels(event.topic).inc()
            logger.error("outbox event dead-lettered", extra={**log, "refused": refused})
            return
        delay = backoff_delay(attempts, self.base_backoff, self.max_backoff, self._rng)
        await conn.execute(_RETRY_SQL, event.id, attempts, error, delay)
        logger.warning("outbox delivery failed, will retry", extra={**log, "retry_in_s": delay})


# -- operations --------------------------------------------------------------------------------


async def list_dead_letters(
    db: Database, limit: int = 100, after: uuid.UUID | None = None
) -> list[DeadLetter]:
    """Dead letters ordered by id; pass the last id seen as `after` for the next page."""
    rows = await db.fetch(
        f"SELECT {_EVENT_COLUMNS}, last_error, dead_lettered_at FROM outbox_dead_letters "
        "WHERE $1::uuid IS NULL OR id > $1::uuid ORDER BY id LIMIT $2",
        after,
        limit,
    )
    return [
        DeadLetter(
            **_event_fields(r), last_error=r["last_error"], dead_lettered_at=r["dead_lettered_at"]
        )
        for r in rows
    ]


async def replay_dead_letters(
    db: Database,
    ids: Sequence[uuid.UUID] | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> int:
    """Move dead letters (the given ids, or all) back to the outbox with attempts reset.

    The original `created_at` is kept, so replayed events go to the front of the queue.
    """
    tag = await db.execute(
        """
        WITH moved AS (
            DELETE FROM outbox_dead_letters
            WHERE $1::uuid[] IS NULL OR id = ANY($1::uuid[])
            RETURNING id, topic, key, payload, type_name, headers, last_error, created_at
        )
        INSERT INTO outbox
            (id, topic, key, payload, type_name, headers, attempts, last_error, created_at)
        SELECT id, topic, key, payload, type_name, headers, 0, last_error, created_at FROM moved
        ON CONFLICT (id) DO UPDATE SET
            attempts = 0, delivered_at = NULL, available_at = now(),
            last_error = EXCLUDED.last_error
        """,
        list(ids) if ids is not None else None,
    )
    count = _rowcount(tag)
    if registry is not None:
        OutboxMetrics.for_registry(registry).replayed.inc(count)
    logger.info("replayed outbox dead letters", extra={"replayed": count})
    return count


# Failed deliveries waiting out a backoff, created more than $1 seconds ago. Events never
# attempted are only waiting for a relay (not stuck); dead letters are `replay_dead_letters`'.
_STUCK = """
    SELECT id FROM outbox
    WHERE delivered_at IS NULL AND attempts > 0 AND available_at > now()
      AND created_at < now() - make_interval(secs => $1)
    ORDER BY created_at LIMIT $2
"""


async def requeue_stuck(
    db: Database, *, older_than_s: float, limit: int, dry_run: bool = False
) -> list[uuid.UUID]:
    """Make failed events created more than `older_than_s` ago due now (at most `limit`, oldest
    first); return their ids. With `dry_run`, only list them. Rows a relay holds are skipped."""
    if dry_run:
        rows = await db.fetch(_STUCK, float(older_than_s), limit)
    else:
        rows = await db.fetch(
            f"""
            UPDATE outbox SET available_at = now()
            WHERE id IN ({_STUCK} FOR UPDATE SKIP LOCKED)
            RETURNING id
            """,
            float(older_than_s),
            limit,
        )
    return [row["id"] for row in rows]


async def purge_delivered(db: Database, older_than_seconds: float, *, batch: int = 1000) -> int:
    """Delete events delivered more than `older_than_seconds` ago; return how many."""
    total = 0
    while True:
        tag = await db.execute(
            """
            DELETE FROM outbox WHERE id IN (
                SELECT id FROM outbox
                WHERE delivered_at < now() - make_interval(secs => $1)
                LIMIT $2
            )
            """,
            float(older_than_seconds),
            batch,
        )
        deleted = _rowcount(tag)
        total += deleted
        if deleted < batch:
            break
        await asyncio.sleep(0)
    if total:
        logger.info("purged delivered outbox events", extra={"deleted": total})
    return total
