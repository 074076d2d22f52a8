"""kill -9 of the integration process in the middle of a 10,000-product sync to the Square
stand-in, and WatchSyncJob from the real grpcurl binary.

The service runs as its own process (`python -m integration_service`, as `make run` starts it)
against the session's Postgres and Redis and the Square stand-in over HTTP (in this test's
event loop, with latency, so a batch is in flight most of the time). Once a few batches are
checkpointed, and while the next is in flight at Square, the process is SIGKILLed — no drain,
no lease given back — and a second process started: it takes the job over once the dead
worker's lease runs out, resends the batch that was in flight unchanged (same idempotency key),
and carries on from the checkpoint. Square then holds every product exactly once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshdev.embedded import free_port
from meshdev.standins import square as sq
from meshdev.standins.square import SquareServer
from meshdev.testing.servers import TestTokens
from meshkit.db import Database
from tests.integration.integration.support import REDIRECT, VENUE, consent, key
from tests.integration.integration.test_sync import catalog
from tickettoken.integration.v1 import integration_pb2 as pb
from tickettoken.integration.v1 import integration_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
GRPCURL = Path(sys.executable).parent / "grpcurl"
AUD = "tickettoken.integration"
LEASE_S = 2.0


class IntegrationProcess:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(env["DEV_DIR"]) / f"integration-{port}.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "integration_service"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "integration never became SERVING"
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
async def square() -> AsyncIterator[SquareServer]:
    async with SquareServer() as server:
        yield server


@pytest.fixture
def schema() -> str:
    return f"synccrash_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(
    postgres_url: str, redis_url: str, dev_dir: Path, square: SquareServer, schema: str
) -> Iterator[dict[str, str]]:
    values = {
        **{k: v for k, v in os.environ.items() if k not in {"APP_ENV", "DATABASE_URL"}},
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        "OPS_PORT": "0",
        "DEV_DIR": str(dev_dir),
        "GUARD_KEY_PREFIX": f"guard-{schema}",
        "ACCESS_LOG": "false",
        "SQUARE_APPLICATION_ID": sq.DEV_APPLICATION_ID,
        "SQUARE_APPLICATION_SECRET": sq.DEV_APPLICATION_SECRET,
        "SQUARE_WEBHOOK_SIGNATURE_KEY": sq.DEV_SIGNATURE_KEY,
        "SQUARE_API_BASE": square.url,
        "INTEGRATION_REDIRECT_URIS": REDIRECT,
        "INTEGRATION_REFRESH_INTERVAL_S": "0",
        "INTEGRATION_SYNC_SCHEDULE_INTERVAL_S": "0",
        "INTEGRATION_SYNC_LEASE_S": str(LEASE_S),
        "INTEGRATION_SYNC_IDLE_S": "0.2",
        "HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    yield values


@pytest.fixture
async def cleanup(postgres_url: str, schema: str) -> AsyncIterator[None]:
    yield
    db = await Database.connect(postgres_url, schema="public", min_size=1, max_size=1)
    try:
        await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await db.close()


def spawn(env: dict[str, str]) -> IntegrationProcess:
    port = free_port()
    process = IntegrationProcess(
        {**env, "GRPC_PORT": str(port), "HTTP_PORT": str(free_port())}, port
    )
    return process


async def connect_square(
    stub: integration_pb2_grpc.IntegrationServiceStub, md: Any
) -> pb.Connection:
    started = await stub.StartOAuth(
        pb.StartOAuthRequest(
            idempotency_key=key(),
            venue_id=VENUE,
            provider=pb.PROVIDER_SQUARE,
            redirect_uri=REDIRECT,
        ),
        metadata=md,
    )
    params = await consent(started.authorization_url)
    done = await stub.CompleteOAuth(
        pb.CompleteOAuthRequest(idempotency_key=key(), state=started.state, code=params["code"]),
        metadata=md,
    )
    return done.connection


async def test_kill_9_mid_sync_resumes_from_the_checkpoint_without_duplicates_at_square(
    env: dict[str, str], square: SquareServer, tokens: TestTokens, cleanup: None
) -> None:
    md = tokens.metadata(tokens.user("venue-admin-1", ["venue_admin"], aud=AUD, venue_ids=[VENUE]))
    first = spawn(env)
    await asyncio.to_thread(first.start)
    second: IntegrationProcess | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            stub = integration_pb2_grpc.IntegrationServiceStub(channel)
            # Ingested before the connection: nothing queued until StartSync.
            await stub.IngestCatalog(
                pb.IngestCatalogRequest(
                    idempotency_key=key(), venue_id=VENUE, events=catalog(10_000)
                ),
                metadata=md,
            )
            connection = await connect_square(stub, md)
            square.faults.latency_s = 0.4  # a batch spends most of its time in flight
            started = await stub.StartSync(
                pb.StartSyncRequest(
                    idempotency_key=key(),
                    connection_id=connection.id,
                    entity_types=[pb.ENTITY_TYPE_PRODUCT],
                    direction=pb.SYNC_DIRECTION_PUSH,
                    mode=pb.SYNC_MODE_FULL,
                ),
                metadata=md,
            )
            job_id = started.job.id
            # Kill while the fifth batch is in flight (four checkpointed before it).
            while square.stats.calls["catalog.batch_upsert"] < 5:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            first.kill()
        second = spawn(env)
        await asyncio.to_thread(second.start)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            stub = integration_pb2_grpc.IntegrationServiceStub(channel)
            resumed = await stub.GetSyncJob(pb.GetSyncJobRequest(job_id=job_id), metadata=md)
            assert 2_000 <= resumed.job.records_succeeded < 10_000
            messages = [
                m
                async for m in stub.WatchSyncJob(pb.WatchSyncJobRequest(job_id=job_id), metadata=md)
            ]
            done = messages[-1].job
            assert done.status == pb.SYNC_JOB_STATUS_SUCCEEDED, done
            assert done.records_succeeded == 10_000
            logs = await stub.ListSyncLogs(
                pb.ListSyncLogsRequest(job_id=job_id, page_size=1000), metadata=md
            )
            assert any("resumed from its checkpoint" in e.message for e in logs.entries)
        # Square holds every product once: the batch in flight at the kill was sent again with
        # the same key (answered from Square's idempotency store), nothing created twice.
        assert square.duplicates() == {}
        assert len(square.live_objects(kind="ITEM")) == 10_000
        refs = square.catalog_refs()
        assert all(refs[f"item-tt-{i}"] == 1 for i in range(10_000))
        assert square.stats.rate_limited == 0
        # 20 batches, and the one in flight at the kill sent once more by the second process.
        assert square.stats.calls["catalog.batch_upsert"] == 21
    finally:
        first.stop()
        if second is not None:
            second.stop()


async def test_grpcurl_watches_a_sync_to_its_end(
    env: dict[str, str], square: SquareServer, tokens: TestTokens, cleanup: None
) -> None:
    md = tokens.metadata(tokens.user("venue-admin-1", ["venue_admin"], aud=AUD, venue_ids=[VENUE]))
    process = spawn(env)
    await asyncio.to_thread(process.start)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{process.port}") as channel:
            stub = integration_pb2_grpc.IntegrationServiceStub(channel)
            # Ingested before the connection: nothing queued until StartSync.
            await stub.IngestCatalog(
                pb.IngestCatalogRequest(
                    idempotency_key=key(), venue_id=VENUE, events=catalog(2_000)
                ),
                metadata=md,
            )
            connection = await connect_square(stub, md)
            square.faults.latency_s = 0.2
            started = await stub.StartSync(
                pb.StartSyncRequest(
                    idempotency_key=key(),
                    connection_id=connection.id,
                    entity_types=[pb.ENTITY_TYPE_PRODUCT],
                    direction=pb.SYNC_DIRECTION_PUSH,
                    mode=pb.SYNC_MODE_FULL,
                ),
                metadata=md,
            )
        authorization = dict(md)["authorization"]
        watched = await asyncio.create_subprocess_exec(
            str(GRPCURL),
            "-plaintext",
            "-H",
            f"authorization: {authorization}",
            "-d",
            json.dumps({"job_id": started.job.id}),
            f"127.0.0.1:{process.port}",
            "tickettoken.integration.v1.IntegrationService/WatchSyncJob",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(watched.communicate(), timeout=60)
        assert watched.returncode == 0, err.decode()
        messages = _json_stream(out.decode())
        assert messages, out.decode()[-2000:]
        phases = [m.get("phase") for m in messages]
        assert "SYNC_PHASE_WRITING" in phases
        assert messages[-1]["phase"] == "SYNC_PHASE_FINISHED"
        assert messages[-1]["job"]["status"] == "SYNC_JOB_STATUS_SUCCEEDED"
        assert messages[-1]["job"]["records_succeeded"] == "2000"
        done = [int(m["job"].get("records_succeeded", "0")) for m in messages]
        assert done == sorted(done) and len({d for d in done if 0 < d < 2000}) > 0
    finally:
        process.stop()


def _json_stream(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one pretty JSON object per message."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return found
        value, index = decoder.raw_decode(text, index)
        found.append(value)
