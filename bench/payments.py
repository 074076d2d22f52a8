"""Benchmark: CreatePayment through the payment service vs the bare `stripe` SDK, same Stripe.

Both sides create and confirm a PaymentIntent on the same Stripe stand-in in the same run, with
`CONCURRENCY` concurrent clients for `SECONDS` after a warm-up. The service side pays for
everything a real CreatePayment does: JWT auth, input rules, the idempotency key row, venue and
30-day volume lookups, the fee quote, the PENDING row and transition record, the Stripe call
through the guard (shared Redis rate limit and breaker), and the state change + ledger posting +
outbox event in one transaction. The baseline is the SDK call alone (same HTTP client class,
same parameters).

The main figure uses the fast Stripe stand-in (meshdev.standins.stripe: answers in well under a
millisecond, with Stripe's idempotency rules), so it measures our own path, not Stripe's. A
second run against localstripe (~15 requests/s, behind the same idempotency rules) is printed
for comparison; there both sides wait on localstripe. localstripe slows down as its store grows,
so it is flushed before every phase. The service runs in its own process (the guard's Stripe
rate limit raised so the bench measures the path, not the production limit of 90/s); Postgres,
Redis and the stand-ins are started here.

Last line: `payments: ratio=<x> rps=<n> p50_ms=<n> p99_ms=<n> baseline_rps=<n>` (fast stand-in).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import stripe
from _support import grpc_serving, log_to_file, pct_ms, wait_until

from meshdev.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    LocalStripe,
    StripeStandIn,
    free_port,
)
from meshdev.testing.servers import TestTokens
from meshkit.auth import ensure_dev_keys
from meshkit.server import App
from meshkit.settings import load_settings
from payment_service.app import DEFINITION
from payment_service.domain.fees import Jurisdiction
from payment_service.settings import PaymentSettings
from payment_service.store import venues
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

CONCURRENCY = 32
SECONDS = 8.0
WARMUP = 2.0
ROUNDS = 2
STRIPE_KEY = "sk_test_bench"
WEBHOOK_SECRET = "whsec_bench"
VENUE = "venue-bench"
TOTAL = 11_025  # what the service charges for one $100 ticket in Nashville (Starter)


async def serve(port: int, log_file: Path) -> None:
    """The payment service, as its process runs it, with the access log written to a file."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    log_to_file("payment", log_file)
    settings = load_settings(
        PaymentSettings,
        grpc_port=port,
        ops_port=0,
        http_port=0,
        app_env="test",
        reconcile_interval_s=0,
        funds_hold_s=0,
        db_pool_max=20,
        # CreatePayment alone: its relay (PaymentSucceeded → nft) has nobody to deliver to here.
        relay_enabled=False,
    )
    app = App(DEFINITION, settings)
    await app.start()
    assert app.kit is not None
    async with app.kit.db.acquire() as conn:
        await venues.upsert(conn, VENUE, Jurisdiction("US", "TN", "Nashville"))
    await stop.wait()
    await app.stop()


async def _load(
    call: Callable[[int], Awaitable[object]], seconds: float
) -> tuple[float, list[float], int]:
    """Drive `call` from CONCURRENCY workers; (rps, latencies, errors) of the measured window."""
    latencies: list[float] = []
    errors = 0
    measuring = False
    done = False
    counter = 0

    async def worker() -> None:
        nonlocal counter, errors
        while not done:
            counter += 1
            t0 = time.perf_counter()
            try:
                await call(counter)
            except Exception:
                if measuring:
                    errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - t0)

    tasks = [asyncio.create_task(worker()) for _ in range(CONCURRENCY)]
    await asyncio.sleep(WARMUP)
    measuring = True
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.perf_counter() - started
    done = True
    await asyncio.gather(*tasks)
    return len(latencies) / elapsed, latencies, errors


async def baseline(stripe_url: str, seconds: float) -> tuple[float, list[float], int]:
    http = stripe.AIOHTTPClient(timeout=30)
    client = stripe.StripeClient(
        STRIPE_KEY,
        base_addresses={"api": stripe_url},
        stripe_version=PaymentSettings.model_fields["stripe_api_version"].default,
        http_client=http,
        max_network_retries=0,
    )

    async def create(n: int) -> object:
        params: dict[str, Any] = {
            "amount": TOTAL,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "payment_method_types": ["card"],
            "confirm": True,
            "metadata": {"order_id": f"bench-{n}"},
        }
        return await client.v1.payment_intents.create_async(
            params,  # type: ignore[arg-type]
            {"idempotency_key": str(uuid.uuid4())},
        )

    try:
        return await _load(create, seconds)
    finally:
        await http.close_async()  # type: ignore[no-untyped-call]


async def service(port: int, token: str, seconds: float) -> tuple[float, list[float], int]:
    md = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)

        async def create(n: int) -> object:
            request = payment_pb2.CreatePaymentRequest(
                idempotency_key=str(uuid.uuid4()),
                order_id=f"order-{uuid.uuid4().hex}",
                venue_id=VENUE,
                event_id="event-bench",
                buyer_id="bench-buyer",
                currency="USD",
                payment_method_id="pm_card_visa",
                line_items=[
                    payment_pb2.LineItem(
                        ticket_type_id="ga",
                        unit_price=common_pb2.Money(currency="USD", amount_minor=10_000),
                        quantity=1,
                    )
                ],
                buyer_contact=common_pb2.ContactInfo(email="bench@example.com"),
            )
            reply = await stub.CreatePayment(request, metadata=md, timeout=30)
            if reply.payment.status != payment_pb2.PAYMENT_STATUS_SUCCEEDED:
                raise RuntimeError(payment_pb2.PaymentStatus.Name(reply.payment.status))
            return reply

        return await _load(create, seconds)


def flush(stripe_url: str) -> None:
    """Empty the Stripe's store (both stand-ins take localstripe's reset call)."""
    httpx.delete(f"{stripe_url}/_config/data", timeout=30).raise_for_status()


def measure(
    work: Path, env: dict[str, Any], stripe_url: str, token: str, rounds: int, seconds: float
) -> dict[str, list[tuple[float, list[float], int]]]:
    """Alternate baseline and service phases against `stripe_url`; the service in its own
    process, started here for this Stripe."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--port",
            str(port),
            "--log-file",
            str(work / "access.log"),
        ],
        env={**env, "STRIPE_API_BASE": stripe_url},
    )
    results: dict[str, list[tuple[float, list[float], int]]] = {"service": [], "baseline": []}
    try:
        wait_until(lambda: grpc_serving(port), "payment service")
        for _ in range(rounds):
            for kind in ("baseline", "service"):
                flush(stripe_url)
                if kind == "baseline":
                    outcome = asyncio.run(baseline(stripe_url, seconds))
                else:
                    outcome = asyncio.run(service(port, token, seconds))
                results[kind].append(outcome)
                rps, lat, errors = outcome
                print(
                    f"{kind:>8}: rps={rps:7.1f} p50_ms={pct_ms(lat, 0.5):7.1f} "
                    f"p99_ms={pct_ms(lat, 0.99):7.1f} errors={errors}",
                    flush=True,
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return results


def summary(results: dict[str, list[tuple[float, list[float], int]]]) -> str:
    rps = statistics.median(r for r, _, _ in results["service"])
    base = statistics.median(r for r, _, _ in results["baseline"])
    lat = [v for _, values, _ in results["service"] for v in values]
    return (
        f"ratio={rps / base:.3f} rps={rps:.1f} p50_ms={pct_ms(lat, 0.5):.1f} "
        f"p99_ms={pct_ms(lat, 0.99):.1f} baseline_rps={base:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", action="store_true")
    parser.add_argument("--port", type=int)
    parser.add_argument("--log-file", type=Path)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.port, args.log_file))
        return

    work = Path(tempfile.mkdtemp(prefix="bench-payments-"))
    postgres = EmbeddedPostgres(work / "pg", fsync=False)
    redis = EmbeddedRedis(work / "redis")
    fast = StripeStandIn(work / "stripe-fast")
    ls = LocalStripe(work / "localstripe")
    try:
        env: dict[str, Any] = {
            **os.environ,
            "DATABASE_URL": postgres.start(),
            "REDIS_URL": redis.start(),
            "DEV_DIR": str(work / "dev"),
            "STRIPE_SECRET_KEY": STRIPE_KEY,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            # The production limit (90/s) would cap the service side: measure the path.
            "PROVIDER_POLICIES": '{"stripe": {"rate": null}}',
        }
        ensure_dev_keys(work / "dev")
        token = TestTokens(work / "dev").user(
            "bench-buyer", ["buyer"], aud="tickettoken.payment", ttl=3600
        )
        print("-- fast Stripe stand-in (our own path)", flush=True)
        main_results = measure(work, env, fast.start(), token, ROUNDS, SECONDS)
        print("-- localstripe (both sides wait on it)", flush=True)
        local_results = measure(work, env, ls.start(), token, 1, SECONDS)
    finally:
        fast.stop()
        ls.stop()
        redis.stop()
        postgres.stop()
    print(f"localstripe: {summary(local_results)}")
    base_lat = [v for _, values, _ in main_results["baseline"] for v in values]
    print(
        f"baseline p50_ms={pct_ms(base_lat, 0.5):.1f} p99_ms={pct_ms(base_lat, 0.99):.1f}; "
        f"concurrency={CONCURRENCY} seconds={SECONDS} rounds={ROUNDS}"
    )
    print(f"payments: {summary(main_results)}")


if __name__ == "__main__":
    main()
