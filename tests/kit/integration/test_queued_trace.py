"""Queued work keeps its trace (meshkit.events.TraceContext, Staged.trace) and background work
logs under a trace (meshkit.jobs): each event of a worker's round continues the trace of the
request that queued its item, and every log line of a job or worker step carries a trace id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from meshkit.db import Database
from meshkit.events import EventPublisher, Staged, TraceContext, envelope_of
from meshkit.jobs import LeasedJob, PeriodicJob, PollingWorker
from meshkit.logs import ContextFilter
from meshkit.outbox import OutboxEvent, OutboxRelay
from meshkit.tracing import continue_trace, current_trace_id
from tickettoken.nft.v1 import events_pb2 as nft_events

A = TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=a")
B = TraceContext("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
AMBIENT = "00-11111111111111111111111111111111-2222222222222222-01"


class Lines(logging.Handler):
    """Log records as the JSON formatter would see them (service, request and trace ids)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter("kit"))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, message: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == message]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def minted(ticket_id: str, trace: TraceContext | None) -> Staged:
    return Staged(nft_events.TicketMinted(ticket_id=ticket_id), "ticket", ticket_id, trace=trace)


async def delivered(database: Database) -> dict[str, OutboxEvent]:
    seen: dict[str, OutboxEvent] = {}

    async def handler(item: OutboxEvent) -> None:
        seen[item.key] = item

    relay = OutboxRelay(database, handler, registry=CollectorRegistry())
    while await relay.run_once():
        pass
    return seen


async def test_each_event_of_a_round_continues_its_own_items_trace(database: Database) -> None:
    publisher = EventPublisher("nft")
    with continue_trace(AMBIENT, name="round"):
        ambient_id = current_trace_id()
        async with database.transaction() as conn:
            await publisher.publish_many(
                conn,
                [
                    minted("t-a", A),
                    minted("t-b", B),
                    minted("t-none", TraceContext()),  # queued outside any trace
                    minted("t-round", None),  # the round's own (current) trace
                ],
            )
    seen = await delivered(database)
    assert set(seen) == {"t-a", "t-b", "t-none", "t-round"}

    a = envelope_of(seen["t-a"])
    assert (a.trace.traceparent, a.trace.tracestate) == (A.traceparent, A.tracestate)
    assert seen["t-a"].headers == {"traceparent": A.traceparent, "tracestate": A.tracestate}
    b = envelope_of(seen["t-b"])
    assert (b.trace.traceparent, b.trace.tracestate) == (B.traceparent, "")
    assert seen["t-b"].headers == {"traceparent": B.traceparent}
    none = envelope_of(seen["t-none"])
    assert none.trace.traceparent == "" and not seen["t-none"].headers
    round_ = envelope_of(seen["t-round"])
    assert ambient_id == AMBIENT.split("-")[1]
    assert round_.trace.traceparent.split("-")[1] == ambient_id
    assert seen["t-round"].headers["traceparent"] == round_.trace.traceparent


async def test_publish_takes_a_stored_trace_too(database: Database) -> None:
    publisher = EventPublisher("nft")
    with continue_trace(AMBIENT, name="worker"):
        async with database.transaction() as conn:
            await publisher.publish(
                conn,
                nft_events.TicketRevoked(ticket_id="t1"),
                aggregate_type="ticket",
                aggregate_id="t1",
                trace=B,
            )
    [event] = (await delivered(database)).values()
    assert envelope_of(event).trace.traceparent == B.traceparent


def test_a_trace_context_is_empty_without_a_traceparent() -> None:
    assert not TraceContext() and not TraceContext.of(None, None)
    assert TraceContext.of(A.traceparent, None) == TraceContext(A.traceparent, "")
    assert not TraceContext.current()  # outside any trace
    with continue_trace(A.traceparent, A.tracestate):
        current = TraceContext.current()
    assert current.traceparent.split("-")[1] == A.traceparent.split("-")[1]
    assert current.traceparent != A.traceparent  # the block's own span
    assert current.tracestate == A.tracestate


async def test_each_polling_step_logs_under_a_trace_of_its_own(lines: Lines) -> None:
    seen: list[str | None] = []
    log = logging.getLogger("test.worker")

    async def step() -> bool:
        seen.append(current_trace_id())
        log.info("stepping")
        if len(seen) == 2:
            raise RuntimeError("boom")
        if len(seen) == 3:
            worker.stop()
        return True

    worker = PollingWorker("w", step, idle_s=0.01, max_backoff_s=0.02)
    await asyncio.wait_for(worker.run(), 5)
    assert len(seen) == 3 and None not in seen and len(set(seen)) == 3
    assert [r.trace_id for r in lines.of("stepping")] == seen  # type: ignore[attr-defined]
    [failed] = lines.of("worker step failed")
    assert failed.trace_id == seen[1]  # type: ignore[attr-defined]
    assert current_trace_id() is None  # nothing leaks out of the step


async def test_periodic_and_leased_runs_each_log_under_a_trace(
    lines: Lines, redis_client: aioredis.Redis
) -> None:
    seen: list[str | None] = []

    async def fn() -> None:
        seen.append(current_trace_id())
        if len(seen) == 2:
            raise RuntimeError("boom")

    job = PeriodicJob("purge", 60, fn)
    assert await job.run_once() == "ok"
    assert await job.run_once() == "error"
    [failed] = lines.of("periodic job failed")
    assert failed.trace_id == seen[1]  # type: ignore[attr-defined]

    leased = LeasedJob("sweep", 60, fn, redis=redis_client, key_prefix="test", lease_s=5)
    assert await leased.run_once() == "ok"
    assert len(seen) == 3 and None not in seen and len(set(seen)) == 3
    assert current_trace_id() is None
