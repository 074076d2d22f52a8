"""Routed delivery against real PostgreSQL and a real kit service as the consumer.

Events staged with the kit's EventPublisher in a test schema are delivered by a real
OutboxRelay whose handler is an EventRouter; the routes call the kit's test app (in-process on
port 0, real stubs through MeshClients). The consumer's answers decide: a permanent refusal
dead-letters the event at the first attempt with its reason, NOT_FOUND and UNAVAILABLE are
retried (and delivered once the consumer can take them), a type without a route is delivered
as a no-op, and a redelivered event makes the same calls with the same keys.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from google.protobuf import wrappers_pb2
from prometheus_client import CollectorRegistry

from meshdev.embedded import free_port
from meshdev.testing.servers import TestTokens
from meshkit.clients import MeshClients
from meshkit.db import Database
from meshkit.events import EventPublisher
from meshkit.outbox import OutboxEvent, OutboxRelay, list_dead_letters, publish
from meshkit.routing import Delivery, EventRouter, Route, each
from meshkit.server import App
from tests.kit.apps.kitapp import DEFINITION, KitAppServicer
from tickettoken.notify.v1 import notify_pb2
from tickettoken.payment.v1 import events_pb2

FAILED = events_pb2.PaymentFailed.DESCRIPTOR.full_name
Metadata = tuple[tuple[str, str], ...]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def outcomes(registry: CollectorRegistry, route: str, outcome: str) -> float:
    return sample(
        registry, "outbox_route_deliveries_total", relay="test", route=route, outcome=outcome
    )


@pytest.fixture
async def consumer(app_factory: Any) -> App:
    app: App = await app_factory(DEFINITION)
    return app


@pytest.fixture
def admin(tokens: TestTokens) -> Metadata:
    return tokens.metadata(tokens.user("admin-1", ["admin"], aud="tickettoken.kitapp"))


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[int], MeshClients]]:
    opened: list[MeshClients] = []

    def make(port: int) -> MeshClients:
        clients = MeshClients(
            targets={"notify": f"127.0.0.1:{port}"}, token_for=None, default_timeout_s=5.0
        )
        opened.append(clients)
        return clients

    yield make
    for clients in opened:
        await clients.close()


def routes_for(clients: MeshClients, admin: Metadata) -> list[Route[Any]]:
    """`render` renders the template named by the event's failure_code (the test app answers
    OK, INVALID_ARGUMENT for "bad", NOT_FOUND for "missing", FAILED_PRECONDITION for
    "locked"); `upsert` stores one template per name in decline_code (comma-separated), one
    idempotent call each."""
    stub = clients.notify

    async def render(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        request = notify_pb2.RenderTemplateRequest(template_id=event.failure_code)
        await stub.RenderTemplate(request, metadata=admin)

    async def upsert(event: events_pb2.PaymentFailed, delivery: Delivery) -> None:
        async def one(name: str) -> None:
            request = notify_pb2.UpsertTemplateRequest(
                idempotency_key=delivery.key(name),
                template=notify_pb2.Template(
                    id=name,
                    channel=notify_pb2.CHANNEL_EMAIL,
                    category=notify_pb2.NOTIFICATION_CATEGORY_TRANSACTIONAL,
                ),
            )
            await stub.UpsertTemplate(request, metadata=admin)

        if event.decline_code:
            await each(event.decline_code.split(","), one)

    return [
        Route(events_pb2.PaymentFailed, "render", render),
        Route(events_pb2.PaymentFailed, "upsert", upsert),
    ]


class Harness:
    def __init__(self, database: Database, routes: list[Route[Any]], max_attempts: int = 3) -> None:
        self.db = database
        self.registry = CollectorRegistry()
        self.router = EventRouter(
            routes, registry=self.registry, relay="test", max_attempts=max_attempts
        )
        self.relay = OutboxRelay(
            database,
            self.router,
            registry=self.registry,
            max_attempts=max_attempts,
            base_backoff=0.01,
            max_backoff=0.02,
            poll_interval=0.01,
        )

    async def publish(self, event: Any) -> uuid.UUID:
        async with self.db.transaction() as conn:
            return await EventPublisher("payment").publish(
                conn, event, aggregate_type="payment", aggregate_id=str(uuid.uuid4())
            )

    async def row(self, event_id: uuid.UUID) -> Any:
        rows = await self.db.fetch(
            "SELECT attempts, last_error, delivered_at FROM outbox WHERE id = $1", event_id
        )
        return rows[0] if rows else None

    async def until(self, check: Callable[[], Awaitable[bool]], rounds: int = 2000) -> None:
        for _ in range(rounds):
            await self.relay.run_once()
            if await check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")


def servicer(app: App) -> KitAppServicer:
    found = app.registrations[0].servicer
    assert isinstance(found, KitAppServicer)
    return found


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("bad", "INVALID_ARGUMENT INVALID_ARGUMENT: "),
        ("locked", "FAILED_PRECONDITION TEMPLATE_LOCKED: template locked is being edited"),
    ],
)
async def test_a_permanent_refusal_dead_letters_at_the_first_attempt_with_its_reason(
    database: Database,
    consumer: App,
    connect: Callable[[int], MeshClients],
    admin: Metadata,
    template: str,
    reason: str,
) -> None:
    h = Harness(database, routes_for(connect(consumer.grpc_port), admin))
    event_id = await h.publish(events_pb2.PaymentFailed(payment_id="p-1", failure_code=template))
    await h.relay.run_once()
    assert await h.row(event_id) is None
    [dead] = await list_dead_letters(database)
    assert dead.id == event_id and dead.attempts == 1
    assert dead.last_error is not None
    assert dead.last_error.startswith(f"undeliverable: render: {reason}")
    if template == "bad":
        assert "variables.name: must not be empty" in dead.last_error
    assert sample(h.registry, "outbox_refused_total", topic=FAILED) == 1
    assert sample(h.registry, "outbox_dead_lettered_total", topic=FAILED) == 1
    assert outcomes(h.registry, "render", "dead_lettered") == 1


async def test_not_found_is_retried_with_backoff_until_the_attempts_are_spent(
    database: Database, consumer: App, connect: Callable[[int], MeshClients], admin: Metadata
) -> None:
    h = Harness(database, routes_for(connect(consumer.grpc_port), admin))
    event_id = await h.publish(events_pb2.PaymentFailed(payment_id="p-1", failure_code="missing"))
    await h.relay.run_once()
    row = await h.row(event_id)
    assert row["attempts"] == 1 and row["delivered_at"] is None
    assert row["last_error"].startswith("RouteFailed: render: NOT_FOUND TEMPLATE_NOT_FOUND")
    assert await list_dead_letters(database) == []

    async def dead() -> bool:
        return bool(await list_dead_letters(database))

    await h.until(dead)
    [letter] = await list_dead_letters(database)
    assert letter.attempts == 3
    assert sample(h.registry, "outbox_refused_total", topic=FAILED) == 0
    assert outcomes(h.registry, "render", "failed") == 2
    assert outcomes(h.registry, "render", "dead_lettered") == 1


async def test_unavailable_is_retried_and_delivered_once_the_consumer_is_up(
    database: Database, app_factory: Any, connect: Callable[[int], MeshClients], admin: Metadata
) -> None:
    port = free_port()
    # Enough attempts to outlast the channel's own reconnect backoff (about a second).
    h = Harness(database, routes_for(connect(port), admin), max_attempts=10_000)
    event_id = await h.publish(
        events_pb2.PaymentFailed(payment_id="p-1", failure_code="hello", decline_code="a,b")
    )
    await h.relay.run_once()
    row = await h.row(event_id)
    assert row["attempts"] == 1 and row["delivered_at"] is None
    assert "UNAVAILABLE" in row["last_error"]

    app = await app_factory(DEFINITION, grpc_port=port)

    async def delivered() -> bool:
        return (await h.row(event_id))["delivered_at"] is not None

    await h.until(delivered)
    assert servicer(app).render_runs == 1 and servicer(app).upsert_runs == 2
    assert await list_dead_letters(database) == []


async def test_a_redelivered_event_makes_the_same_calls_with_the_same_keys(
    database: Database, consumer: App, connect: Callable[[int], MeshClients], admin: Metadata
) -> None:
    h = Harness(database, routes_for(connect(consumer.grpc_port), admin))
    event_id = await h.publish(
        events_pb2.PaymentFailed(payment_id="p-1", failure_code="hi", decline_code="x,y,z")
    )
    await h.relay.run_once()
    assert (await h.row(event_id))["delivered_at"] is not None
    # Three parts, three keys: three templates really stored (one key for all would have been
    # refused as IDEMPOTENCY_KEY_REUSED for the second and third).
    assert servicer(consumer).upsert_runs == 3
    # The relay died after the calls and before its commit: the event is delivered again.
    await database.execute("UPDATE outbox SET delivered_at = NULL WHERE id = $1", event_id)
    await h.relay.run_once()
    assert (await h.row(event_id))["delivered_at"] is not None
    assert servicer(consumer).upsert_runs == 3  # answered from the idempotency store
    assert outcomes(h.registry, "upsert", "delivered") == 2


async def test_an_event_type_without_a_route_is_delivered_as_a_no_op(
    database: Database, consumer: App, connect: Callable[[int], MeshClients], admin: Metadata
) -> None:
    h = Harness(database, routes_for(connect(consumer.grpc_port), admin))
    event_id = await h.publish(events_pb2.PayoutCreated(payout_id="po-1"))
    await h.relay.run_once()
    row = await h.row(event_id)
    assert row["delivered_at"] is not None and row["attempts"] == 1
    assert servicer(consumer).render_runs == 0
    topic = events_pb2.PayoutCreated.DESCRIPTOR.full_name
    assert sample(h.registry, "outbox_unrouted_events_total", relay="test", event_type=topic) == 1


async def test_concurrent_delivery_keeps_one_keys_events_in_order(database: Database) -> None:
    """With concurrency, events of different keys are in the handler together; events of one
    key one after another, in creation order."""
    async with database.transaction() as conn:
        for i in range(3):
            await publish(conn, "t", wrappers_pb2.StringValue(value=f"a{i}"), key="a")
        await publish(conn, "t", wrappers_pb2.StringValue(value="b0"), key="b")
        await publish(conn, "t", wrappers_pb2.StringValue(value="c0"), key="c")
    together = asyncio.Barrier(3)  # a's first, b and c: only met if they run at once
    order: dict[str, list[str]] = defaultdict(list)
    in_flight: set[str] = set()

    async def handle(event: OutboxEvent) -> None:
        value = event.unpack(wrappers_pb2.StringValue).value
        assert event.key not in in_flight, "two events of one key at once"
        in_flight.add(event.key or "")
        try:
            if value in ("a0", "b0", "c0"):
                await asyncio.wait_for(together.wait(), 10)
            order[event.key or ""].append(value)
        finally:
            in_flight.discard(event.key or "")

    relay = OutboxRelay(database, handle, registry=CollectorRegistry(), concurrency=4)
    assert await relay.run_once() == 5
    assert order == {"a": ["a0", "a1", "a2"], "b": ["b0"], "c": ["c0"]}
    rows = await database.fetch("SELECT count(*) AS n FROM outbox WHERE delivered_at IS NULL")
    assert rows[0]["n"] == 0
