"""The sync engine's gaps closed (issue 14): nothing stranded behind an active job, and a
provider outage waited out instead of failing the job — against the Square stand-in over HTTP,
the service in-process on real Postgres and Redis, no schedule configured."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from meshdev.standins.square import SquareServer
from meshkit.server import App
from tests.integration.integration.support import Client, quiet, rows, until
from tests.integration.integration.test_sync import (
    catalog,
    finished,
    ingest,
    square_connection,
    start,
)
from tickettoken.integration.v1 import integration_pb2 as pb

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_a_record_that_arrives_as_the_job_ends_is_pushed_by_a_follow_up(
    client: Client, square: SquareServer
) -> None:
    await ingest(client, catalog(10))  # before the connection: nothing queued
    connection = await square_connection(client)
    assert client.app.kit is not None
    async with client.app.kit.db.acquire() as holder:
        # Hold the connection row: the job reads its last (empty) batch, then waits in its
        # final transaction, still active — the window in which a new record was stranded.
        gate = holder.transaction()
        await gate.start()
        await holder.execute(
            "SELECT 1 FROM connections WHERE id = $1 FOR NO KEY UPDATE", uuid.UUID(connection.id)
        )
        job = await start(client, connection.id, pb.SYNC_MODE_INCREMENTAL)

        async def finishing() -> bool:
            found = await rows(
                client.app,
                "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'UPDATE connections SET last_synced_at%'",
            )
            return int(found[0]["n"]) > 0

        await until(finishing, "the job waits in its final transaction")
        await ingest(client, catalog(5, start=10))
        again = await start(client, connection.id, pb.SYNC_MODE_INCREMENTAL)
        assert again.id == job.id  # answered by the job that has read its last batch
        await gate.rollback()

    first = (await finished(client, job.id))[-1].job
    assert (first.status, first.records_succeeded) == (pb.SYNC_JOB_STATUS_SUCCEEDED, 10)
    await quiet(client.app)
    jobs = await rows(
        client.app, "SELECT id, mode, requested_by FROM sync_jobs ORDER BY created_at"
    )
    assert str(jobs[0]["id"]) == job.id
    assert len(jobs) == 2 and jobs[1]["mode"] == "INCREMENTAL"
    follow_up = (await finished(client, str(jobs[1]["id"])))[-1].job
    assert (follow_up.status, follow_up.records_succeeded) == (pb.SYNC_JOB_STATUS_SUCCEEDED, 5)
    assert len(square.live_objects(kind="ITEM")) == 15
    assert square.duplicates() == {}


async def test_many_ingests_racing_running_pushes_reach_square_exactly_once(
    client: Client, square: SquareServer
) -> None:
    connection = await square_connection(client)
    square.faults.latency_s = 0.05  # pushes take a while: ingests land while they run
    rounds, size = 24, 7

    async def one(n: int) -> str:
        await ingest(client, catalog(size, start=n * size, per_event=size))
        return (await start(client, connection.id, pb.SYNC_MODE_INCREMENTAL)).id

    answered = await asyncio.gather(*(one(n) for n in range(rounds)))
    await quiet(client.app)
    assert len(set(answered)) < rounds  # running jobs answered some of the requests
    jobs = await rows(client.app, "SELECT status FROM sync_jobs")
    assert {j["status"] for j in jobs} == {"SUCCEEDED"}
    items = square.live_objects(kind="ITEM")
    assert len(items) == rounds * size
    assert square.duplicates() == {}
    # Once each: the records written over all the jobs are the records ingested.
    written = await rows(client.app, "SELECT sum(records_succeeded) AS n FROM sync_jobs")
    assert written[0]["n"] == rounds * size


async def test_a_provider_outage_is_waited_out_and_the_job_resumes_its_batch(
    start_integration: Any, connect: Any, square: SquareServer
) -> None:
    app: App = await start_integration(integration_sync_outage_backoff_s=0.2)
    async with connect(app) as client:
        await ingest(client, catalog(1_000))  # before the connection: nothing queued
        connection = await square_connection(client)
        square.fail_next(3, 503)  # every attempt the guard makes at the first batch
        job = await start(client, connection.id)
        messages = await finished(client, job.id)
        done = messages[-1].job
        assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED, done
        assert done.records_processed == done.records_total == 1_000
        assert done.error_code == ""
        # It went back to the queue once, on its own, then resumed from its checkpoint.
        assert pb.SYNC_JOB_STATUS_PENDING in [m.job.status for m in messages[1:]]
        found = await rows(app, "SELECT outages, attempts FROM sync_jobs")
        assert [(r["outages"], r["attempts"]) for r in found] == [(1, 2)]
        logs = await client.stub.ListSyncLogs(
            pb.ListSyncLogsRequest(job_id=job.id, min_level=pb.LOG_LEVEL_WARNING),
            metadata=client.md(),
        )
        assert [e.message for e in logs.entries] == [
            "provider unavailable: the job waits and resumes from its checkpoint"
        ]
        assert len(square.live_objects(kind="ITEM")) == 1_000
        assert square.duplicates() == {}
        assert (await rows(app, "SELECT pending FROM sync_cursors"))[0]["pending"] is None


async def test_an_outage_longer_than_the_bound_fails_the_job_with_the_provider_error(
    start_integration: Any, connect: Any, square: SquareServer
) -> None:
    app: App = await start_integration(
        integration_sync_outage_backoff_s=0.1, integration_sync_outage_retries=1
    )
    async with connect(app) as client:
        await ingest(client, catalog(300))  # before the connection: nothing queued
        connection = await square_connection(client)
        square.fail_next(6, 503)  # two claims' worth of the guard's attempts
        job = await start(client, connection.id)
        failed = (await finished(client, job.id))[-1].job
        assert failed.status == pb.SYNC_JOB_STATUS_FAILED
        assert failed.error_code and failed.records_succeeded == 0
        found = await rows(app, "SELECT outages FROM sync_jobs")
        assert [r["outages"] for r in found] == [1]
        pending = await rows(app, "SELECT pending FROM sync_cursors")
        assert pending[0]["pending"] is not None  # kept for the next job, sent first
