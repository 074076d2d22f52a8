"""Benchmark: a signed Stripe webhook from receipt to committed state + ledger + outbox.

The payment service runs in its own process. `PAYMENTS` payments waiting for 3-D Secure are
written to its schema first; then a client (playing Stripe) POSTs a signed
`payment_intent.succeeded` for each to `/webhooks/stripe` from `CONCURRENCY` connections. A
request's latency ends with the service's 200, which it sends only after the transaction that
holds the inbox row, the state change, the ledger posting (checked by the balance trigger) and
the outbox event has committed. Afterwards every payment must be SUCCEEDED with exactly one
charge posting and one outbox event, and the ledger must pass every invariant check.

Webhook processing calls nothing at Stripe, so no localstripe is needed here.

Last line: `webhooks: p50_ms=<n> p99_ms=<n> rps=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

import aiohttp
import stripe
from _support import http_answers, log_to_file, pct_ms, wait_until

from meshdev.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from meshkit.auth import ensure_dev_keys
from meshkit.db import Database
from meshkit.server import App
from meshkit.settings import load_settings
from payment_service.app import DEFINITION
from payment_service.domain.fees import Jurisdiction, Pricing, VenueTier
from payment_service.domain.model import Contact, EventDetails, LineItem, NewPayment
from payment_service.domain.states import PaymentStatus
from payment_service.settings import PaymentSettings
from payment_service.store import ledger, payments

PAYMENTS = 3000
WARMUP = 200
CONCURRENCY = 8
WEBHOOK_SECRET = "whsec_bench"


async def serve(http_port: int, log_file: Path) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    log_to_file("payment", log_file)
    settings = load_settings(
        PaymentSettings,
        grpc_port=0,
        ops_port=0,
        http_port=http_port,
        app_env="test",
        reconcile_interval_s=0,
        funds_hold_s=0,
        db_pool_max=20,
        # The webhook path alone: the relay (PaymentSucceeded → nft) has nobody to deliver to.
        relay_enabled=False,
    )
    app = App(DEFINITION, settings)
    await app.start()
    await stop.wait()
    await app.stop()


async def seed(database_url: str) -> list[tuple[uuid.UUID, str]]:
    """PAYMENTS payments in REQUIRES_ACTION, as CreatePayment leaves a 3-D Secure payment."""
    db = await Database.connect(database_url, schema="payment", max_size=2)
    quote = Pricing(gas_fee_per_ticket=50).quote(
        "USD", 10_000, 1, VenueTier.STARTER, Jurisdiction("US", "TN", "Nashville")
    )
    rows = []
    try:
        async with db.transaction() as conn:
            for i in range(PAYMENTS):
                payment_id = uuid.uuid4()
                intent_id = f"pi_bench_{i:06d}"
                await payments.insert(
                    conn,
                    NewPayment(
                        id=payment_id,
                        order_id=f"order-{i}",
                        venue_id="venue-bench",
                        event_id="event-bench",
                        buyer_id="bench-buyer",
                        currency="USD",
                        quote=quote,
                        payment_method_id="pm_card_visa",
                        line_items=(LineItem("ga", 1, 10_000, ticket_ids=(f"t-{i}",)),),
                        buyer_contact=Contact(name="Bench", email="bench@example.com"),
                        event=EventDetails(event_name="Bench"),
                        created_by="bench-buyer",
                        status=PaymentStatus.REQUIRES_ACTION,
                        provider_payment_id=intent_id,
                    ),
                )
                rows.append((payment_id, intent_id))
    finally:
        await db.close()
    return rows


def signed_event(payment_id: uuid.UUID, intent_id: str) -> tuple[bytes, str]:
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": intent_id,
                    "object": "payment_intent",
                    "status": "succeeded",
                    "amount": 11_795,
                    "latest_charge": f"ch_{intent_id[3:]}",
                    "metadata": {"payment_id": str(payment_id)},
                }
            },
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(body, WEBHOOK_SECRET)
    return body.encode(), header


async def deliver(
    http_port: int, rows: list[tuple[uuid.UUID, str]], concurrency: int
) -> tuple[float, list[float]]:
    url = f"http://127.0.0.1:{http_port}/webhooks/stripe"
    events = [signed_event(pid, pi) for pid, pi in rows]
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[int, bytes, str]] = asyncio.Queue()
    for i, (body, header) in enumerate(events):
        queue.put_nowait((i, body, header))
    measured_start = 0.0
    measured_end = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal measured_start, measured_end
        while not queue.empty():
            i, body, header = queue.get_nowait()
            if i == WARMUP:
                measured_start = time.perf_counter()
            t0 = time.perf_counter()
            async with session.post(
                url,
                data=body,
                headers={"Stripe-Signature": header, "Content-Type": "application/json"},
            ) as response:
                reply: dict[str, Any] = await response.json()
                if response.status != 200 or reply["status"] != "WEBHOOK_STATUS_PROCESSED":
                    raise RuntimeError(f"webhook {i}: {response.status} {reply}")
            if i >= WARMUP:
                latencies.append(time.perf_counter() - t0)
                measured_end = time.perf_counter()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return len(latencies) / (measured_end - measured_start), latencies


async def verify(database_url: str) -> None:
    db = await Database.connect(database_url, schema="payment", max_size=2)
    try:
        async with db.acquire() as conn:
            succeeded = await conn.fetchval(
                "SELECT count(*) FROM payments WHERE status = 'SUCCEEDED'"
            )
            postings = await conn.fetchval("SELECT count(*) FROM journal_transactions")
            events = await conn.fetchval("SELECT count(*) FROM outbox")
            problems = await ledger.check(conn)
    finally:
        await db.close()
    if (succeeded, postings, events) != (PAYMENTS, PAYMENTS, PAYMENTS) or problems:
        raise RuntimeError(
            f"state after the run is wrong: {succeeded} {postings} {events} {problems[:3]}"
        )
    print(
        f"verified: {succeeded} succeeded, {postings} postings, {events} outbox events, ledger ok"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--log-file", type=Path)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.http_port, args.log_file))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    postgres = EmbeddedPostgres(work / "pg", fsync=False)
    redis = EmbeddedRedis(work / "redis")
    http_port = free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        database_url = postgres.start()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.start(),
            "DEV_DIR": str(work / "dev"),
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            # Never called: processing a webhook makes no Stripe request.
            "STRIPE_API_BASE": f"http://127.0.0.1:{free_port()}",
        }
        ensure_dev_keys(work / "dev")
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--http-port",
                str(http_port),
                "--log-file",
                str(work / "service.log"),
            ],
            env=env,
        )
        wait_until(
            partial(http_answers, f"http://127.0.0.1:{http_port}/webhooks/stripe", "POST"),
            "payment webhook endpoint",
        )
        rows = asyncio.run(seed(database_url))
        rps, latencies = asyncio.run(deliver(http_port, rows, args.concurrency))
        asyncio.run(verify(database_url))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        redis.stop()
        postgres.stop()
    print(f"payments={PAYMENTS} warmup={WARMUP} concurrency={args.concurrency}")
    p50, p99 = pct_ms(latencies, 0.5), pct_ms(latencies, 0.99)
    print(f"webhooks: p50_ms={p50:.1f} p99_ms={p99:.1f} rps={rps:.0f}")


if __name__ == "__main__":
    main()
