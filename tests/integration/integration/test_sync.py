"""The sync engine (issue 14) against the Square stand-in over HTTP, with the service in-process
on real Postgres and Redis: the venue's catalogue ingested, pushed as Square catalog items in
batches, exactly once and without a 429; incremental syncs send only what changed; full syncs
delete what is gone; cancel; dead letters from a mapping error, fixed and retried; progress
streamed by WatchSyncJob (resumable by sequence); one active job per connection and entity."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import httpx
import pytest

from meshdev.standins import square as sq
from meshdev.standins.square import SquareServer
from meshkit.server import App
from tests.integration.integration.support import VENUE, Client, key, quiet, rows
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def catalog(n: int, *, price: int = 2500, start: int = 0, per_event: int = 100) -> list[Any]:
    """n ticket types `tt-<i>` in events of `per_event` each."""
    events = []
    for e in range(start // per_event, (start + n + per_event - 1) // per_event):
        first = max(start, e * per_event)
        last = min(start + n, (e + 1) * per_event)
        events.append(
            pb.CatalogEvent(
                event_id=f"ev-{e}",
                name=f"Show {e}",
                venue_name="Grand Hall",
                ticket_types=[
                    pb.CatalogTicketType(
                        ticket_type_id=f"tt-{i}",
                        name=f"Ticket {i}",
                        description="General admission",
                        price=common_pb2.Money(currency="USD", amount_minor=price),
                    )
                    for i in range(first, last)
                ],
            )
        )
    return events


async def ingest(client: Client, events: Sequence[Any], *, complete: bool = False) -> Any:
    return await client.stub.IngestCatalog(
        pb.IngestCatalogRequest(
            idempotency_key=key(), venue_id=VENUE, events=events, complete=complete
        ),
        metadata=client.md(),
    )


async def start(
    client: Client, connection_id: str, mode: int = pb.SYNC_MODE_FULL, **extra: Any
) -> pb.SyncJob:
    answer = await client.stub.StartSync(
        pb.StartSyncRequest(
            idempotency_key=key(),
            connection_id=connection_id,
            entity_types=[pb.ENTITY_TYPE_PRODUCT],
            direction=pb.SYNC_DIRECTION_PUSH,
            mode=mode,
            **extra,
        ),
        metadata=client.md(),
    )
    return answer.job


async def watch(
    client: Client, job_id: str, after: int = 0
) -> AsyncIterator[pb.WatchSyncJobResponse]:
    stream = client.stub.WatchSyncJob(
        pb.WatchSyncJobRequest(job_id=job_id, after_sequence=after), metadata=client.md()
    )
    async for message in stream:
        yield message


async def finished(client: Client, job_id: str) -> list[pb.WatchSyncJobResponse]:
    """Every WatchSyncJob message until the stream ends (at the job's final state)."""
    return [m async for m in watch(client, job_id)]


async def square_connection(client: Client) -> pb.Connection:
    return await client.dance(pb.PROVIDER_SQUARE)


async def queued_after(app: App, job_id: str) -> str:
    """The one job queued after `job_id` (e.g. the push an ingest queued on its own)."""
    found = await rows(
        app,
        "SELECT id FROM sync_jobs WHERE created_at > "
        "(SELECT created_at FROM sync_jobs WHERE id = $1) ORDER BY created_at",
        uuid.UUID(job_id),
    )
    assert len(found) == 1, found
    return str(found[0]["id"])


FINAL = {
    pb.SYNC_JOB_STATUS_SUCCEEDED,
    pb.SYNC_JOB_STATUS_PARTIAL,
    pb.SYNC_JOB_STATUS_FAILED,
    pb.SYNC_JOB_STATUS_CANCELLED,
}


async def test_ten_thousand_products_reach_square_once_in_batches_without_a_429(
    client: Client, square: SquareServer
) -> None:
    ingested = await ingest(client, catalog(10_000))  # before the connection: nothing queued
    assert ingested.changed_count == 10_000
    connection = await square_connection(client)

    job = await start(client, connection.id)
    messages = await finished(client, job.id)

    last = messages[-1]
    assert last.job.status == pb.SYNC_JOB_STATUS_SUCCEEDED, last.job
    assert last.phase == pb.SYNC_PHASE_FINISHED
    assert last.job.records_succeeded == 10_000
    assert last.job.records_total == 10_000
    assert last.job.progress_bps == 10_000
    sequences = [m.sequence for m in messages]
    assert sequences == sorted(set(sequences))
    assert any(m.phase == pb.SYNC_PHASE_WRITING and m.rate_per_minute > 0 for m in messages)
    # At Square: every ticket type once (the item by its client id, the variation by its SKU).
    refs = square.catalog_refs()
    assert all(refs[f"item-tt-{i}"] == 1 and refs[f"tt-{i}"] == 1 for i in range(10_000))
    assert square.duplicates() == {}
    assert len(square.live_objects(kind="ITEM")) == 10_000
    # In batches of 1,000 objects (500 items with their variation), none throttled.
    assert square.stats.calls["catalog.batch_upsert"] == 20
    assert square.stats.rate_limited == 0 and square.stats.concurrency_limited == 0
    mapped = await rows(client.app, "SELECT count(*) AS n FROM id_map")
    assert mapped[0]["n"] == 10_000

    # Incremental (the push the ingest queues): only the changed records go, as updates of
    # the same objects.
    changed = catalog(3, price=3000, start=200)
    await ingest(client, changed)
    again = await queued_after(client.app, job.id)
    done = (await finished(client, again))[-1].job
    assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED
    assert done.mode == pb.SYNC_MODE_INCREMENTAL
    assert (done.records_total, done.records_succeeded, done.records_skipped) == (3, 3, 0)
    assert square.stats.calls["catalog.batch_upsert"] == 21
    assert len(square.live_objects(kind="ITEM")) == 10_000
    prices = {
        v["item_variation_data"]["sku"]: v["item_variation_data"]["price_money"]["amount"]
        for v in square.live_objects(kind="ITEM_VARIATION")
    }
    assert [prices[f"tt-{i}"] for i in (199, 200, 201, 202, 203)] == [2500, 3000, 3000, 3000, 2500]
    assert square.duplicates() == {}


async def test_a_full_sync_deletes_what_is_gone_and_skips_what_is_unchanged(
    client: Client, square: SquareServer
) -> None:
    await ingest(client, catalog(30, per_event=10))
    connection = await square_connection(client)
    first = await start(client, connection.id)
    assert (await finished(client, first.id))[-1].job.records_succeeded == 30

    # The venue's whole catalogue is now the first 20 (event 2 dropped): the ingest queues an
    # incremental push, asked again for a full sync while it is active (a full follow-up) or
    # not (a new full job). Either way the 10 deletions reach Square once and nothing else.
    answer = await ingest(client, catalog(20, per_event=10), complete=True)
    assert (answer.changed_count, answer.unchanged_count, answer.deleted_count) == (0, 20, 10)
    full = await start(client, connection.id)
    await quiet(client.app)
    later = await rows(
        client.app,
        "SELECT id, mode, status, records_succeeded FROM sync_jobs WHERE id <> $1",
        uuid.UUID(first.id),
    )
    assert {j["status"] for j in later} == {"SUCCEEDED"}, later
    assert sum(j["records_succeeded"] for j in later) == 10  # the 10 deletions
    assert "FULL" in {j["mode"] for j in later}
    assert full.id in {str(j["id"]) for j in later}
    live = {
        o["item_data"]["variations"][0]["item_variation_data"]["sku"]
        for o in square.live_objects(kind="ITEM")
    }
    assert live == {f"tt-{i}" for i in range(20)}

    # A full sync of an unchanged catalogue writes nothing (20 unchanged, 10 already deleted).
    calls = square.stats.calls["catalog.batch_upsert"]
    again = await start(client, connection.id)
    done = (await finished(client, again.id))[-1].job
    assert (done.records_succeeded, done.records_skipped) == (0, 30)
    assert square.stats.calls["catalog.batch_upsert"] == calls


async def test_one_active_job_per_connection_and_entity_and_cancel_stops_between_batches(
    start_integration: Any, connect: Any, square: SquareServer
) -> None:
    # No workers: jobs stay queued until one is started below.
    app: App = await start_integration(integration_sync_workers=0)
    async with connect(app) as client:
        await ingest(client, catalog(10))  # before the connection: nothing queued
        connection = await square_connection(client)
        job = await start(client, connection.id)
        second = await start(client, connection.id, pb.SYNC_MODE_INCREMENTAL)
        assert second.id == job.id
        assert job.status == pb.SYNC_JOB_STATUS_PENDING

        cancelled = await client.stub.CancelSync(
            pb.CancelSyncRequest(idempotency_key=key(), job_id=job.id, reason="wrong venue"),
            metadata=client.md(),
        )
        assert cancelled.job.status == pb.SYNC_JOB_STATUS_CANCELLED
        messages = await finished(client, job.id)
        assert messages[-1].job.status == pb.SYNC_JOB_STATUS_CANCELLED
        # Once it ended, a new job may start.
        third = await start(client, connection.id)
        assert third.id != job.id
        assert square.stats.calls["catalog.batch_upsert"] == 0


async def test_cancel_of_a_running_job_stops_after_the_current_batch(
    client: Client, square: SquareServer
) -> None:
    await ingest(client, catalog(5_000))  # before the connection: nothing queued
    connection = await square_connection(client)
    square.faults.latency_s = 0.3  # each batch takes a while at Square
    job = await start(client, connection.id)
    seen = []
    async for message in watch(client, job.id):
        seen.append(message)
        if message.job.records_succeeded >= 500 and len(seen) < 1000:
            await client.stub.CancelSync(
                pb.CancelSyncRequest(idempotency_key=key(), job_id=job.id),
                metadata=client.md(),
            )
    last = seen[-1].job
    assert last.status == pb.SYNC_JOB_STATUS_CANCELLED
    assert 500 <= last.records_succeeded < 5_000
    assert last.records_succeeded % 500 == 0  # whole batches only
    assert len(square.live_objects(kind="ITEM")) == last.records_succeeded


async def test_watch_resumes_after_a_sequence_and_a_venue_admin_sees_only_their_jobs(
    client: Client, square: SquareServer
) -> None:
    await ingest(client, catalog(1_200))  # before the connection: nothing queued
    connection = await square_connection(client)
    job = await start(client, connection.id)
    messages = await finished(client, job.id)
    middle = messages[len(messages) // 2].sequence
    resumed = [m async for m in watch(client, job.id, after=middle)]
    assert [m.sequence for m in resumed] == [m.sequence for m in messages if m.sequence > middle]
    assert resumed[-1].job.status in FINAL

    other = client.md("venue-admin-2", ("venue-memphis",))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.stub.GetSyncJob(pb.GetSyncJobRequest(job_id=job.id), metadata=other)
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    logs = await client.stub.ListSyncLogs(
        pb.ListSyncLogsRequest(job_id=job.id, page_size=2), metadata=client.md()
    )
    assert [e.message for e in logs.entries] == ["job succeeded", "batch written"]
    assert logs.next_page_token


async def test_a_mapping_error_dead_letters_the_record_and_a_fixed_mapping_delivers_it(
    client: Client, square: SquareServer
) -> None:
    events = catalog(5)
    events[0].ticket_types[2].description = ""  # fine: description is optional
    await ingest(client, events)  # before the connection: nothing queued before the mapping
    connection = await square_connection(client)
    # A mapping that requires the description (empty for tt-2).
    defaults = await client.stub.GetFieldMappings(
        pb.GetFieldMappingsRequest(connection_id=connection.id, entity_type=pb.ENTITY_TYPE_PRODUCT),
        metadata=client.md(),
    )
    strict = []
    for m in defaults.mappings:
        copy = pb.FieldMapping()
        copy.CopyFrom(m)
        if m.internal_field == "description":
            copy.required = True
        strict.append(copy)
    stored = await client.stub.SetFieldMappings(
        pb.SetFieldMappingsRequest(
            idempotency_key=key(), connection_id=connection.id, mappings=strict
        ),
        metadata=client.md(),
    )
    job = await start(client, connection.id)
    done = (await finished(client, job.id))[-1].job
    assert done.status == pb.SYNC_JOB_STATUS_PARTIAL
    assert (done.records_succeeded, done.records_failed) == (4, 1)
    letters = await client.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(connection_id=connection.id), metadata=client.md()
    )
    assert [d.record.internal_id for d in letters.dead_letters] == ["tt-2"]
    assert square.count_ref("tt-2") == 0

    # Fix the mapping (a default for the empty description) and retry.
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
    retried = await client.stub.RetryDeadLetters(
        pb.RetryDeadLettersRequest(
            idempotency_key=key(),
            connection_id=connection.id,
            dead_letter_ids=[letters.dead_letters[0].id],
        ),
        metadata=client.md(),
    )
    assert retried.requeued_count == 1
    done = (await finished(client, retried.job.id))[-1].job
    assert (done.status, done.records_succeeded) == (pb.SYNC_JOB_STATUS_SUCCEEDED, 1)
    assert square.catalog_refs()["item-tt-2"] == 1
    left = await client.stub.ListDeadLetters(
        pb.ListDeadLettersRequest(connection_id=connection.id), metadata=client.md()
    )
    assert list(left.dead_letters) == []
    assert square.duplicates() == {}


async def test_a_due_schedule_queues_an_incremental_sync_on_one_replica(
    start_integration: Any, connect: Any, square: SquareServer
) -> None:
    # Two replicas that both run the schedule job often; the schedule runs once per due time.
    first: App = await start_integration(integration_sync_schedule_interval_s=0.1)
    await start_integration(
        integration_sync_schedule_interval_s=0.1, db_schema=first.settings.schema_name
    )
    async with connect(first) as client:
        await ingest(client, catalog(7))  # before the connection: nothing queued
        connection = await square_connection(client)
        stored = await client.stub.SetSyncSchedule(
            pb.SetSyncScheduleRequest(
                idempotency_key=key(),
                connection_id=connection.id,
                entity_types=[pb.ENTITY_TYPE_PRODUCT],
                direction=pb.SYNC_DIRECTION_PUSH,
                interval_seconds=3600,
                enabled=True,
            ),
            metadata=client.md(),
        )
        assert stored.schedule.enabled and stored.schedule.HasField("next_run_at")
        assert not stored.schedule.last_job_id
        await rows(
            client.app,
            "UPDATE sync_schedules SET next_run_at = now() WHERE connection_id = $1",
            uuid.UUID(connection.id),
        )
        for _ in range(600):
            found = await client.stub.GetSyncSchedule(
                pb.GetSyncScheduleRequest(connection_id=connection.id), metadata=client.md()
            )
            if found.schedule.last_job_id:
                break
            await asyncio.sleep(0.05)
        job_id = found.schedule.last_job_id
        assert job_id
        done = (await finished(client, job_id))[-1].job
        assert done.mode == pb.SYNC_MODE_INCREMENTAL
        assert (done.status, done.records_succeeded) == (pb.SYNC_JOB_STATUS_SUCCEEDED, 7)
        jobs = await rows(client.app, "SELECT id FROM sync_jobs")
        assert [str(j["id"]) for j in jobs] == [job_id]  # queued once, by one replica
        assert found.schedule.next_run_at.ToDatetime() > stored.schedule.next_run_at.ToDatetime()


async def test_a_watcher_that_disconnects_costs_the_job_nothing(
    client: Client, square: SquareServer
) -> None:
    await ingest(client, catalog(2_000))  # before the connection: nothing queued
    connection = await square_connection(client)
    square.faults.latency_s = 0.1
    job = await start(client, connection.id)
    call = client.stub.WatchSyncJob(pb.WatchSyncJobRequest(job_id=job.id), metadata=client.md())
    first = await call.read()
    assert isinstance(first, pb.WatchSyncJobResponse) and first.job.id == job.id
    call.cancel()  # the client goes away mid-stream
    done = (await finished(client, job.id))[-1].job  # a new watcher sees it to its end
    assert (done.status, done.records_succeeded) == (pb.SYNC_JOB_STATUS_SUCCEEDED, 2_000)
    errors = await client.stub.ListSyncLogs(
        pb.ListSyncLogsRequest(job_id=job.id, min_level=pb.LOG_LEVEL_WARNING),
        metadata=client.md(),
    )
    assert list(errors.entries) == []
    assert square.duplicates() == {}


async def test_a_provider_down_fails_the_job_and_the_next_sends_its_batch_first(
    start_integration: Any, connect: Any, square: SquareServer
) -> None:
    # No waiting out the outage (test_sync_gaps.py covers that): the job fails at once.
    app: App = await start_integration(integration_sync_outage_retries=0)
    async with connect(app) as client:
        await _provider_down(client, square)


async def _provider_down(client: Client, square: SquareServer) -> None:
    await ingest(client, catalog(1_000))  # before the connection: nothing queued
    connection = await square_connection(client)
    square.fail_next(3, 503)  # every attempt the guard makes at the first batch
    job = await start(client, connection.id)
    failed = (await finished(client, job.id))[-1].job
    assert failed.status == pb.SYNC_JOB_STATUS_FAILED
    assert failed.error_code and failed.records_succeeded == 0
    pending = await rows(client.app, "SELECT pending FROM sync_cursors")
    assert pending[0]["pending"] is not None  # the batch that may have reached Square

    again = await start(client, connection.id)
    done = (await finished(client, again.id))[-1].job
    assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED, done
    assert done.records_processed == done.records_total == 1_000
    assert len(square.live_objects(kind="ITEM")) == 1_000
    assert square.duplicates() == {}
    assert (await rows(client.app, "SELECT pending FROM sync_cursors"))[0]["pending"] is None


async def test_a_pull_brings_square_changes_into_the_mirror_and_the_next_push_echoes_nothing(
    client: Client, square: SquareServer
) -> None:
    await ingest(client, catalog(3))  # before the connection: nothing queued
    connection = await square_connection(client)
    pushed = (await finished(client, (await start(client, connection.id)).id))[-1].job
    assert pushed.records_succeeded == 3
    # At Square, the venue renames one item and adds one of its own.
    item = next(
        o
        for o in square.live_objects(kind="ITEM")
        if o["id"] and o["item_data"]["name"] == "Ticket 1"
    )
    item["item_data"]["name"] = "Ticket 1 (late entry)"
    # (the default mapping reads the name back from the variation as well)
    item["item_data"]["variations"][0]["item_variation_data"]["name"] = "Ticket 1 (late entry)"
    new_item = {
        "type": "ITEM",
        "id": "#merch",
        "item_data": {
            "name": "Tour poster",
            "variations": [
                {
                    "type": "ITEM_VARIATION",
                    "id": "#merch-v",
                    "item_variation_data": {
                        "name": "Tour poster",
                        "sku": "poster",
                        "pricing_type": "FIXED_PRICING",
                        "price_money": {"amount": 1500, "currency": "USD"},
                    },
                }
            ],
        },
    }
    async with httpx.AsyncClient(base_url=square.url) as http:
        answer = await http.post(
            "/v2/catalog/batch-upsert",
            json={"idempotency_key": key(), "batches": [{"objects": [item, new_item]}]},
            headers={"Authorization": f"Bearer {sq.DEV_ACCESS_TOKEN}"},
        )
        assert answer.status_code == 200, answer.text
    calls = square.stats.calls["catalog.batch_upsert"]

    pulled = await client.stub.StartSync(
        pb.StartSyncRequest(
            idempotency_key=key(),
            connection_id=connection.id,
            entity_types=[pb.ENTITY_TYPE_PRODUCT],
            direction=pb.SYNC_DIRECTION_PULL,
            mode=pb.SYNC_MODE_INCREMENTAL,
        ),
        metadata=client.md(),
    )
    done = (await finished(client, pulled.job.id))[-1].job
    assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED, done
    mirror = {
        r["internal_id"]: json.loads(r["data"])
        for r in await rows(client.app, "SELECT internal_id, data FROM mirror_records")
    }
    assert mirror["tt-1"]["name"] == "Ticket 1 (late entry)"
    assert mirror["tt-1"]["event"]["name"] == "Show 0"  # what Square does not hold is kept
    assert mirror["tt-0"]["name"] == "Ticket 0"
    assert mirror["poster"]["price"] == {"amount_minor": 1500, "currency": "USD"}

    # Pushing back to Square sends nothing: it holds all of this already.
    echo = (
        await finished(client, (await start(client, connection.id, pb.SYNC_MODE_INCREMENTAL)).id)
    )[-1].job
    assert echo.status == pb.SYNC_JOB_STATUS_SUCCEEDED
    assert echo.records_succeeded == 0
    assert square.stats.calls["catalog.batch_upsert"] == calls
    assert square.duplicates() == {}
