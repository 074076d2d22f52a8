"""Benchmark (issue 14): 10,000 products synced to the Square stand-in by 2 integration processes
working together, at the rate limit and never over it.

Embedded PostgreSQL and Redis; the Square stand-in (HTTP, its token bucket per application:
429 over the limit, one catalog write at a time per seller) in this process; two integration
service processes (`python -m integration_service`, production code path, 2 sync workers each)
sharing the `square` guard's limit through Redis. `VENUES` venues each ingest an equal share of
the 10,000 ticket types, then connect their own Square seller (OAuth through the stand-in; an
ingest with a connection would queue its own push); one FULL push per venue is queued,
alternately through either process; whichever worker claims a job runs it.

The limit: Square takes a catalog in batches of 1,000 objects (500 products), so 10,000 products
are only 20 requests; at Square's own 45 req/s the limit would never bind and there would be
nothing to measure. The stand-in and the guard are therefore both set to `--rate` requests per
second (default 3): the same limit on both sides, as in production, low enough that the sync is
limited by it.

Counted at the stand-in: every batch-upsert's arrival time. utilisation = arrivals per second
between the first and the last arrival / the limit (goal ≥ 0.95; the guard spaces requests by
(1 s + 40 ms of jitter allowance) / rate, so 0.96 is the most it can show); violations = 429s the
stand-in answered because its limit was exceeded (goal 0); duplicates = products held by more
than one live catalog item, plus products missing (goal 0). records_per_s = products / (first
StartSync → last job finished).

Last line: `sync: utilisation=<x> records_per_s=<n> violations=<n> duplicates=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import httpx
from _support import grpc_serving, wait_until
from aiohttp import web

from meshdev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from meshdev.standins import square as sq
from meshdev.standins.square import Merchant, Obj, SquareServer
from meshdev.testing.servers import TestTokens
from tickettoken.common.v1 import common_pb2
from tickettoken.integration.v1 import integration_pb2 as pb
from tickettoken.integration.v1 import integration_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
RECORDS = 10_000
VENUES = 4
REDIRECT = "https://admin.tickettoken.test/integrations/callback"
AUD = "tickettoken.integration"
FINAL = {
    pb.SYNC_JOB_STATUS_SUCCEEDED,
    pb.SYNC_JOB_STATUS_PARTIAL,
    pb.SYNC_JOB_STATUS_FAILED,
    pb.SYNC_JOB_STATUS_CANCELLED,
}


def key() -> str:
    return str(uuid.uuid4())


def catalog(venue: str, first: int, count: int) -> list[pb.CatalogEvent]:
    events = []
    for start in range(first, first + count, 100):
        events.append(
            pb.CatalogEvent(
                event_id=f"{venue}-ev-{start // 100}",
                name=f"Show {start // 100}",
                venue_name="Grand Hall",
                ticket_types=[
                    pb.CatalogTicketType(
                        ticket_type_id=f"tt-{i}",
                        name=f"Ticket {i}",
                        description="General admission",
                        price=common_pb2.Money(currency="USD", amount_minor=2500 + i % 100),
                    )
                    for i in range(start, min(first + count, start + 100))
                ],
            )
        )
    return events


class CountingSquare(SquareServer):
    """The stand-in, noting when each catalog batch-upsert arrives."""

    def __init__(self, arrivals: list[float], **kwargs: Any) -> None:
        self.arrivals = arrivals
        super().__init__(**kwargs)

    async def batch_upsert(self, _r: web.Request, merchant: Merchant, body: Obj) -> web.Response:
        self.arrivals.append(time.monotonic())
        return await super().batch_upsert(_r, merchant, body)


def spawn(env: dict[str, str], work: Path, n: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (work / f"integration-{n}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "integration_service"],
        cwd=REPO,
        env={**env, "GRPC_PORT": str(port), "HTTP_PORT": str(free_port())},
        stdout=log,
        stderr=log,
    )
    return proc, port


def serving_or_exited(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Stop waiting as soon as the process is serving, or has exited (its log says why)."""
    return proc.poll() is not None or grpc_serving(port)


async def connect(
    stub: integration_pb2_grpc.IntegrationServiceAsyncStub, md: Any, venue: str, merchant: str
) -> str:
    started = await stub.StartOAuth(
        pb.StartOAuthRequest(
            idempotency_key=key(),
            venue_id=venue,
            provider=pb.PROVIDER_SQUARE,
            redirect_uri=REDIRECT,
        ),
        metadata=md,
    )
    async with httpx.AsyncClient() as http:
        answer = await http.get(
            started.authorization_url + f"&merchant_id={merchant}", follow_redirects=False
        )
    params = dict(parse_qsl(urlsplit(answer.headers["location"]).query))
    done = await stub.CompleteOAuth(
        pb.CompleteOAuthRequest(idempotency_key=key(), state=started.state, code=params["code"]),
        metadata=md,
    )
    return str(done.connection.id)


async def run(
    args: argparse.Namespace, env: dict[str, str], work: Path, tokens: TestTokens
) -> None:
    venues = [f"venue-bench-{v}" for v in range(args.venues)]
    md = tokens.metadata(tokens.user("bench-admin", ["venue_admin"], aud=AUD, venue_ids=venues))
    arrivals: list[float] = []
    square = CountingSquare(arrivals, rate_per_s=args.rate)
    async with square:
        square_env = {
            **env,
            "SQUARE_API_BASE": square.url,
            "PROVIDER_POLICIES": f'{{"square": {{"rate": {args.rate}}}}}',
        }
        procs: list[tuple[subprocess.Popen[bytes], int]] = []
        try:
            # One after the other: the first start creates the dev key file both read.
            for n in range(2):
                procs.append(spawn(square_env, work, n))
                proc, port = procs[-1]
                await asyncio.to_thread(
                    wait_until,
                    partial(serving_or_exited, proc, port),
                    f"integration on {port}",
                    90.0,
                )
                if proc.poll() is not None:
                    tail = (work / f"integration-{n}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"integration {n} exited with {proc.returncode}:\n{tail}")
            channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _, port in procs]
            stubs = [integration_pb2_grpc.IntegrationServiceStub(c) for c in channels]
            per_venue = args.records // args.venues
            connections = []
            for v, venue in enumerate(venues):
                # Ingested before the venue connects, so the ingest queues no push of its own:
                # the measured syncs are the FULL pushes queued below.
                events = catalog(venue, v * per_venue, per_venue)
                await stubs[0].IngestCatalog(
                    pb.IngestCatalogRequest(idempotency_key=key(), venue_id=venue, events=events),
                    metadata=md,
                )
                merchant = square.add_merchant(name=f"Bench venue {v}").id
                connections.append(await connect(stubs[0], md, venue, merchant))
            square.stats.calls.clear()
            square.stats.rate_limited = 0
            square.stats.concurrency_limited = 0
            arrivals.clear()
            started = time.monotonic()
            jobs = []
            for n, connection in enumerate(connections):
                answer = await stubs[n % 2].StartSync(
                    pb.StartSyncRequest(
                        idempotency_key=key(),
                        connection_id=connection,
                        entity_types=[pb.ENTITY_TYPE_PRODUCT],
                        direction=pb.SYNC_DIRECTION_PUSH,
                        mode=pb.SYNC_MODE_FULL,
                    ),
                    metadata=md,
                )
                jobs.append(answer.job.id)
            done: dict[str, pb.SyncJob] = {}
            while len(done) < len(jobs):
                for job_id in jobs:
                    if job_id in done:
                        continue
                    got = await stubs[0].GetSyncJob(
                        pb.GetSyncJobRequest(job_id=job_id), metadata=md
                    )
                    if got.job.status in FINAL:
                        done[job_id] = got.job
                await asyncio.sleep(0.05)
            finished = time.monotonic()
            for channel in channels:
                await channel.close()
        finally:
            for proc, _ in procs:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

        succeeded = sum(j.records_succeeded for j in done.values())
        failed = sum(j.records_failed for j in done.values())
        statuses = sorted(pb.SyncJobStatus.Name(j.status) for j in done.values())
        duplicates = 0
        missing = 0
        for merchant_id in square.merchants:
            refs = square.catalog_refs(merchant_id)
            duplicates += sum(n - 1 for n in refs.values() if n > 1)
        held = set()
        for merchant_id in square.merchants:
            held |= {r for r in square.catalog_refs(merchant_id) if r.startswith("item-")}
        missing = sum(1 for i in range(per_venue * args.venues) if f"item-tt-{i}" not in held)
        violations = square.stats.rate_limited + square.stats.concurrency_limited
        span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
        utilisation = (len(arrivals) - 1) / span / args.rate if span > 0 else 0.0
        records_per_s = succeeded / (finished - started)
        print(
            f"venues={args.venues} records={per_venue * args.venues} rate={args.rate}/s "
            f"requests={len(arrivals)} span_s={span:.2f} wall_s={finished - started:.2f} "
            f"jobs={statuses} succeeded={succeeded} failed={failed} missing={missing}"
        )
        print(
            f"sync: utilisation={utilisation:.3f} records_per_s={records_per_s:.0f} "
            f"violations={violations} duplicates={duplicates + missing}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--venues", type=int, default=VENUES)
    parser.add_argument("--rate", type=int, default=3, help="requests per second (both sides)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    postgres = EmbeddedPostgres(work / "pg", fsync=False)
    redis = EmbeddedRedis(work / "redis")
    try:
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"APP_ENV", "DATABASE_URL"}},
            "APP_ENV": "test",
            "DATABASE_URL": postgres.start(),
            "REDIS_URL": redis.start(),
            "DB_SCHEMA": "integration",
            "OPS_PORT": "0",
            "DEV_DIR": str(work / "dev"),
            "ACCESS_LOG": "false",
            "LOG_LEVEL": "WARNING",
            "SQUARE_APPLICATION_ID": sq.DEV_APPLICATION_ID,
            "SQUARE_APPLICATION_SECRET": sq.DEV_APPLICATION_SECRET,
            "SQUARE_WEBHOOK_SIGNATURE_KEY": sq.DEV_SIGNATURE_KEY,
            "INTEGRATION_REDIRECT_URIS": REDIRECT,
            "INTEGRATION_REFRESH_INTERVAL_S": "0",
            "INTEGRATION_SYNC_SCHEDULE_INTERVAL_S": "0",
            "INTEGRATION_SYNC_WORKERS": "2",
            "INTEGRATION_SYNC_IDLE_S": "0.2",
        }
        tokens = TestTokens(work / "dev")
        asyncio.run(run(args, env, work, tokens))
    finally:
        redis.stop()
        postgres.stop()


if __name__ == "__main__":
    main()
