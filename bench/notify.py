"""Benchmark: emails delivered per second through gRPC → queue → SMTP server, against a raw
aiosmtplib loop to the same server, in the same run.

Same machine, same SMTP server: the dev kit's mail sink (a real aiosmtpd server writing every
message as an .eml file) as its own process. The service runs as its own process, the way
`make run` starts it (embedded Postgres and Redis), and every message goes through everything a
real one does: SendNotification (auth, validation, idempotency, the template rendered in the
recipient's locale, the address validated, consent checked, the row queued), a delivery worker
(claim with a lease, consent again, the attempt recorded before the send, the kit's "smtp"
guard, a pooled SMTP connection, the outcome and its NotificationSent event in one
transaction). The client sends `MESSAGES` requests with `CLIENT_CONCURRENCY` in flight;
sent/s = messages / (first request → last message kept by the server, read from its
directory); p99_enqueue_ms is the 99th percentile of the SendNotification calls.

The raw loop sends the same rendered message (the bytes the service produces, new Message-ID
each) with aiosmtplib over `RAW_CONNECTIONS` connections, each sending back to back: the
server's speed with nothing else in the way. The box is small and shared, so the two are
measured alternately (raw, service, raw, service, raw) and the medians compared.

Last line: `notify: ratio=<x> sent_per_s=<n> raw_per_s=<n> p99_enqueue_ms=<n>`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiosmtplib
import grpc
from _support import grpc_serving, pct_ms, wait_until

from meshdev.embedded import DevSmtp, EmbeddedPostgres, EmbeddedRedis, free_port
from meshdev.standins.smtp import Mailbox
from meshdev.testing.servers import TestTokens
from meshkit.auth import ensure_dev_keys
from notify_service.adapters.base import OutboundEmail
from notify_service.adapters.smtp import build_message
from notify_service.domain.model import Category, Channel
from notify_service.domain.templates import render_template
from notify_service.templates import shipped
from tickettoken.notify.v1 import notify_pb2, notify_pb2_grpc

MESSAGES = 2000
CLIENT_CONCURRENCY = 32
RAW_CONNECTIONS = 16
ROUNDS = 3
FROM = "TicketToken <tickets@tickettoken.test>"
VARIABLES = {
    "event_name": "The Band: Fall Tour",
    "venue_name": "Grand Hall",
    "event_starts_at": "Fri 1 May 2026, 20:00",
    "ticket_id": "pay-1-t0",
    "mint_address": "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
    "cluster": "devnet",
    "metadata_uri": "https://tkt.example/m/abc",
}


def sample_message(i: int) -> bytes:
    """What the service sends for one ticket confirmation (a new Message-ID each)."""
    template = next(t for t in shipped() if t.id == "ticket_confirmation" and t.locale == "en-US")
    assert template.channel is Channel.EMAIL and template.category is Category.TRANSACTIONAL
    content = render_template(
        template,
        {
            **VARIABLES,
            "recipient_name": "Ada Lovelace",
            "unsubscribe_url": "http://127.0.0.1:8083/unsubscribe/" + "x" * 43,
        },
    )
    email = OutboundEmail(
        notification_id=str(uuid.uuid4()),
        message_id=f"<raw-{i}-{uuid.uuid4().hex}@tickettoken.test>",
        from_address=FROM,
        to_address=f"buyer{i}@example.com",
        to_name="Ada Lovelace",
        subject=content.subject,
        text=content.body_text,
        html=content.body_html,
        headers={
            "List-Unsubscribe": "<http://127.0.0.1:8083/unsubscribe/" + "x" * 43 + ">",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    return build_message(email).as_bytes()


async def raw_loop(smtp: DevSmtp) -> float:
    """Messages per second straight to the server over RAW_CONNECTIONS connections."""
    smtp.clear()
    messages = [sample_message(i) for i in range(MESSAGES)]
    per = MESSAGES // RAW_CONNECTIONS

    async def connection(n: int) -> None:
        client = aiosmtplib.SMTP(hostname=smtp.host, port=smtp.port, timeout=30)
        await client.connect()
        for raw in messages[n * per : (n + 1) * per]:
            await client.sendmail("tickets@tickettoken.test", [f"buyer{n}@example.com"], raw)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(RAW_CONNECTIONS)))
    elapsed = time.perf_counter() - started
    assert smtp.mailbox.count() == per * RAW_CONNECTIONS
    return per * RAW_CONNECTIONS / elapsed


def kept_count(mailbox: Mailbox) -> int:
    """Messages the server kept (a cheap directory count: the client must not compete with
    the service for the CPU it measures)."""
    return sum(1 for name in os.listdir(mailbox.directory) if name.endswith(".eml"))


async def service_round(
    port: int, md: tuple[tuple[str, str], ...], mailbox: Mailbox
) -> tuple[float, list[float]]:
    """(messages per second through the service, SendNotification latencies)."""
    mailbox.clear()
    latencies: list[float] = []
    gate = asyncio.Semaphore(CLIENT_CONCURRENCY)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = notify_pb2_grpc.NotifyServiceStub(channel)

        async def send(i: int) -> None:
            request = notify_pb2.SendNotificationRequest(
                idempotency_key=str(uuid.uuid4()),
                recipient=notify_pb2.Recipient(
                    user_id=f"buyer-{i}",
                    email=f"buyer{i}@example.com",
                    name="Ada Lovelace",
                    locale="en-US",
                ),
                channel=notify_pb2.CHANNEL_EMAIL,
                template_id="ticket_confirmation",
                variables=VARIABLES,
            )
            async with gate:
                began = time.perf_counter()
                await stub.SendNotification(request, metadata=md, timeout=30)
                latencies.append(time.perf_counter() - began)

        started = time.perf_counter()
        await asyncio.gather(*(send(i) for i in range(MESSAGES)))
        deadline = time.monotonic() + 120
        while (kept := kept_count(mailbox)) < MESSAGES:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {kept} of {MESSAGES} arrived")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return MESSAGES / elapsed, latencies


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-notify-"))
    postgres = EmbeddedPostgres(work / "pg", fsync=False)
    redis = EmbeddedRedis(work / "redis")
    smtp = DevSmtp(work / "smtp", mail_dir=work / "mail")
    port = free_port()
    ensure_dev_keys(work / "dev")
    token = TestTokens(work / "dev").service("payment", aud="tickettoken.notify", ttl=3600)
    md = (("authorization", f"Bearer {token}"),)
    env = {
        **os.environ,
        "APP_ENV": "dev",
        "DATABASE_URL": postgres.start(),
        "REDIS_URL": redis.start(),
        "DEV_DIR": str(work / "dev"),
        "GRPC_PORT": str(port),
        "OPS_PORT": "0",
        "HTTP_PORT": "0",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "NOTIFY_EMAIL_PROVIDERS": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(0),
        "NOTIFY_WORKERS": "2",
        "NOTIFY_WORKER_BATCH": "100",
        "NOTIFY_SEND_CONCURRENCY": "16",
        "SMTP_POOL_SIZE": "32",
        "DB_POOL_MAX": "20",
        # The dev sink has no limits of its own; the default SMTP bulkhead (20 in flight across
        # replicas) stays on, as in production.
        "PROVIDER_POLICIES": json.dumps({}),
    }
    raws: list[float] = []
    rates: list[float] = []
    latencies: list[float] = []
    smtp.start()
    env["SMTP_PORT"] = str(smtp.port)
    print(
        f"{MESSAGES} ticket confirmations per round ({len(sample_message(0))} bytes each), "
        f"client concurrency {CLIENT_CONCURRENCY}, raw loop over {RAW_CONNECTIONS} connections",
        flush=True,
    )
    proc = subprocess.Popen([sys.executable, "-m", "notify_service"], env=env)
    try:
        wait_until(lambda: grpc_serving(port), "notify service", timeout=90)
        raws.append(asyncio.run(raw_loop(smtp)))
        print(f"raw aiosmtplib loop: {raws[-1]:.0f} emails/s", flush=True)
        for round_no in range(ROUNDS):
            rate, lat = asyncio.run(service_round(port, md, smtp.mailbox))
            rates.append(rate)
            latencies += lat
            print(
                f"service round {round_no + 1}: {rate:.0f} emails/s delivered through "
                f"SendNotification → queue → SMTP (enqueue p50 {pct_ms(lat, 0.5):.1f} ms, "
                f"p99 {pct_ms(lat, 0.99):.1f} ms)",
                flush=True,
            )
            raws.append(asyncio.run(raw_loop(smtp)))
            print(f"raw aiosmtplib loop: {raws[-1]:.0f} emails/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        smtp.stop()
        redis.stop()
        postgres.stop()
    raw = statistics.median(raws)
    sent = statistics.median(rates)
    print(
        f"notify: ratio={sent / raw:.2f} sent_per_s={sent:.0f} raw_per_s={raw:.0f} "
        f"p99_enqueue_ms={pct_ms(latencies, 0.99):.1f}"
    )


if __name__ == "__main__":
    main()
