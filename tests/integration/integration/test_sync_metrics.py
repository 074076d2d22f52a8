"""The sync metrics on the ops port's /metrics, read from the sync tables at scrape time: a job
queued with no worker to run it (jobs gauge, oldest queued age), then a sync to the Square
stand-in with a mapping error (records by outcome, the finished job, the open dead letter) and
its retry (the dead letter resolved)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshdev.standins.square import SquareServer
from meshkit.server import App
from tests.integration.integration.support import Client, Start, key
from tests.integration.integration.test_sync import catalog, finished, ingest, start
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(app: App) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(f"http://127.0.0.1:{app.ops_port}/metrics")
    page.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scraped_until(app: App, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until `check` holds: each scrape shows the tables as read after the previous one."""

    async def poll() -> Samples:
        while True:
            samples = await scrape(app)
            if check(samples):
                return samples
            await asyncio.sleep(0.05)

    try:
        return await asyncio.wait_for(poll(), 60)
    except TimeoutError:
        raise AssertionError(f"never scraped: {what}; last: {await scrape(app)}") from None


PRODUCT = {"provider": "square", "entity_type": "PRODUCT"}


async def test_a_queued_job_shows_as_queued_with_its_age(
    start_integration: Start, connect: Any
) -> None:
    app = await start_integration(integration_sync_workers=0)  # nothing claims the job
    async with connect(app) as client:
        before = await scraped_until(
            app,
            lambda s: value(s, "integration_sync_metrics_read_ok") == 1,
            "a first read of the tables",
        )
        assert value(before, "integration_sync_jobs", **PRODUCT, status="queued") == 0
        assert value(before, "integration_sync_oldest_queued_seconds") == 0
        assert value(before, "integration_sync_dead_letters", **PRODUCT) == 0

        await ingest(client, catalog(3))  # before the connection: nothing queued
        connection = await client.dance(pb.PROVIDER_SQUARE)
        job = await start(client, connection.id)
        assert job.status == pb.SYNC_JOB_STATUS_PENDING

        after = await scraped_until(
            app,
            lambda s: value(s, "integration_sync_oldest_queued_seconds") not in (None, 0),
            "the queued job's age",
        )
        assert value(after, "integration_sync_jobs", **PRODUCT, status="queued") == 1
        assert value(after, "integration_sync_jobs", **PRODUCT, status="running") == 0
        assert value(after, "integration_sync_jobs", **PRODUCT, status="backing_off") == 0


async def test_a_sync_s_records_finished_job_and_dead_letters_are_exported(
    client: Client, square: SquareServer
) -> None:
    events = catalog(5)
    events[0].ticket_types[2].description = ""
    await ingest(client, events)  # before the connection: nothing queued before the mapping
    connection = await client.dance(pb.PROVIDER_SQUARE)
    defaults = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id, entity_type=pb.ENTITY_TYPE_PRODUCT),
        metadata=client.md(),
    )
    strict = []
    for m in defaults.mappings:
        copy = pb.FieldMapping()
        copy.CopyFrom(m)
        if m.internal_field == "description":
            copy.required = True  # tt-2 has none: a mapping error, dead-lettered
        strict.append(copy)
    stored = await client.stub.SetFieldMappings(
        pb.SetFieldMappingsRequest(
            idempotency_key=key(), connection_id=connection.id, mappings=strict
        ),
        metadata=client.md(),
    )
    job = await start(client, connection.id)
    done = (await finished(client, job.id))[-1].job
    assert (done.status, done.records_succeeded, done.records_failed) == (
        pb.SYNC_JOB_STATUS_PARTIAL,
        4,
        1,
    )

    push = {**PRODUCT, "direction": "PUSH"}
    records = "integration_sync_records_total"
    samples = await scraped_until(
        app := client.app,
        lambda s: (
            value(s, "integration_sync_jobs_finished_total", provider="square", status="partial")
            == 1
        ),
        "the partial job",
    )
    assert value(samples, records, **push, outcome="succeeded") == 4
    assert value(samples, records, **push, outcome="failed") == 1
    assert value(samples, records, **push, outcome="skipped") == 0
    assert value(samples, "integration_sync_dead_letters", **PRODUCT) == 1
    assert value(samples, "integration_sync_jobs", **PRODUCT, status="running") == 0
    assert value(samples, "integration_sync_oldest_queued_seconds") == 0
    assert value(samples, "integration_sync_metrics_read_ok") == 1

    # Fixed and retried: the dead letter is resolved, the retry job's record counted.
    for m in strict:
        if m.internal_field == "description":
            m.default_value = "See the venue's site"
    await client.stub.SetFieldMappings(
        pb.SetFieldMappingsRequest(
            idempotency_key=key(),
            connection_id=connection.id,
            mappings=strict,
            expected_version=stored.version,
        ),
        metadata=client.md(),
    )
    letters = await client.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(connection_id=connection.id), metadata=client.md()
    )
    retried = await client.stub.RetryDeadLetters(
        pb.RetryDeadLettersRequest(
            idempotency_key=key(),
            connection_id=connection.id,
            dead_letter_ids=[d.id for d in letters.dead_letters],
        ),
        metadata=client.md(),
    )
    await finished(client, retried.job.id)
    samples = await scraped_until(
        app,
        lambda s: value(s, "integration_sync_dead_letters", **PRODUCT) == 0,
        "the dead letter resolved",
    )
    assert value(samples, records, **push, outcome="succeeded") == 5
    assert (
        value(
            samples, "integration_sync_jobs_finished_total", provider="square", status="succeeded"
        )
        == 1
    )
    assert square.duplicates() == {}
