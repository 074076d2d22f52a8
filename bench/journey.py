"""Benchmark: the whole purchase journey (paid → minted → emailed) vs CreatePayment alone, on the
same mesh in the same run.

The mesh runs as processes, as `make run` starts it (meshdev.procmesh.ProcessMesh): embedded
PostgreSQL and Redis, the fast Stripe stand-in (sub-millisecond, Stripe's idempotency rules), a
LiteSVM Solana node as its own process (nft with SOLANA_CHAIN=rpc: real Token-2022 mints, the
kit's guard in front), the SMTP sink writing every message as an .eml file, and payment, nft and
notify as processes. Every service runs its production code path with its default settings
(`--quick`: the tests' short polls, retries and leases), except the guards' rate limits for
Stripe and Solana, lifted: they are the providers' (Stripe 90/s, a public Solana RPC endpoint
9/s), not ours to measure.

1. Baseline: payment's relay paused (RELAY_ENABLED=false), `BUYERS` concurrent buyers send
   CreatePayment back to back (`TICKETS` tickets each, the test card) for `PURCHASES` purchases
   after a warm-up: purchases per second of the payment service alone on this mesh.
2. Journey: the events the baseline staged are dropped, payment restarts with its relay, and the
   same load runs again; a purchase is done when one confirmation email per ticket is in the
   SMTP sink (the relays' MintTickets, the minter's transactions on chain, TicketMinted, notify's
   SendNotification, the delivery worker's SMTP send). purchases_per_s = purchases / (first
   CreatePayment → last email); p50_s / p99_s: CreatePayment sent → its last email kept.
3. Lost and duplicated, counted where a buyer would see them once everything settled: each ticket
   needs its mint on chain (its derived address, supply 1: read with getProgramAccounts, not our
   tables) and one confirmation email. lost = tickets without a mint + tickets without an email;
   duplicated = mints on chain that are no ticket's + emails beyond the first per ticket.

ratio = journey purchases_per_s / baseline purchases_per_s (goal ≥ 0.8: minting and notifying keep
up with selling). Where the time goes is printed for both phases: CPU milliseconds per purchase of
each process (PostgreSQL with its backends), and for the journey each stage's pace (paid, mint
queued, minted, email queued, email sent: items per second, from the services' rows), whose
slowest is the bottleneck. `--set nft:NFT_WORKER_CONCURRENCY=32` tries a setting. On one small
box every process shares the same cores, so the journey's throughput is bounded by its total CPU
per purchase against CreatePayment's; in production nft and notify run on their own. The box is
small and shared: run it when nothing else runs.

Last line: `journey: ratio=<x> purchases_per_s=<n> p50_s=<n> p99_s=<n> lost=<n> duplicated=<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import statistics
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

import asyncpg
import grpc
import psutil  # type: ignore[import-untyped]

from meshdev.launcher import DEMO_VENUE
from meshdev.procmesh import ProcessMesh
from meshdev.standins.smtp import Mailbox, read_message
from nft_service.adapters.chain.token import TOKEN_2022, mint_address
from nft_service.adapters.keys import Derivation, ensure_dev_payer, ensure_dev_secret, parse_keypair
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

BUYERS = 8
TICKETS = 2
PURCHASES = 240
WARMUP = 16
SETTLE_S = 180.0  # the journey's last email must arrive within this after the last payment
EVENT_NAME = "The Band: Bench Night"


@dataclass
class Sale:
    email: str
    sent: float
    payment_id: str = ""
    tickets: list[str] = field(default_factory=list)
    done: float = 0.0


def request(email: str, buyer: str) -> payment_pb2.CreatePaymentRequest:
    event = payment_pb2.EventDetails(event_name=EVENT_NAME, venue_name="Ryman Auditorium")
    event.starts_at.FromDatetime(datetime(2030, 10, 2, 1, 0, tzinfo=UTC))
    return payment_pb2.CreatePaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        order_id=f"order-{uuid.uuid4().hex[:12]}",
        venue_id=DEMO_VENUE,
        event_id="event-bench",
        buyer_id=buyer,
        currency="USD",
        payment_method_id="pm_card_visa",
        line_items=[
            payment_pb2.LineItem(
                ticket_type_id="ga",
                unit_price=common_pb2.Money(currency="USD", amount_minor=5_000),
                quantity=TICKETS,
            )
        ],
        buyer_contact=common_pb2.ContactInfo(name="Ada", email=email),
        event=event,
    )


async def sell(mesh: ProcessMesh, count: int, sales: dict[str, Sale]) -> tuple[float, float]:
    """`count` purchases by BUYERS concurrent buyers, back to back: (first sent, last answered)."""
    queue = list(range(count))
    target = mesh.services["payment"].target
    async with grpc.aio.insecure_channel(target) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)

        async def buyer(index: int) -> None:
            buyer_id = f"buyer-bench-{index}"
            md = mesh.metadata("payment", sub=buyer_id, roles=("buyer",))
            while queue:
                queue.pop()
                email = f"b{index}-{uuid.uuid4().hex[:10]}@example.com"
                sale = sales[email] = Sale(email, time.monotonic())
                reply = await stub.CreatePayment(request(email, buyer_id), metadata=md, timeout=30)
                assert reply.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
                sale.payment_id = reply.payment.id
                sale.tickets = [t for line in reply.payment.line_items for t in line.ticket_ids]

        started = time.monotonic()
        await asyncio.gather(*(buyer(i) for i in range(BUYERS)))
        return started, time.monotonic()


class MailWatch:
    """Reads each new .eml's headers as it lands (the envelope recipient and the subject: cheap,
    the bench shares the CPU with the mesh); a sale is done when its buyer has one confirmation
    per ticket. `count()` reads every message whole afterwards, ticket by ticket."""

    def __init__(self, mailbox: Mailbox, sales: dict[str, Sale]) -> None:
        self.mailbox = mailbox
        self.sales = sales
        self.seen: set[Path] = set()
        self.arrived: dict[str, set[str]] = {}  # buyer email → Message-IDs of confirmations
        self.parser = BytesHeaderParser(policy=compat32)

    def poll(self) -> None:
        fresh = [p for p in self.mailbox.paths() if p not in self.seen]
        now = time.monotonic()
        for path in fresh:
            self.seen.add(path)
            with path.open("rb") as f:
                head = self.parser.parse(f)
            if not str(head["Subject"] or "").startswith("Your ticket for"):
                continue
            for rcpt in str(head["X-Envelope-To"] or "").split(","):
                sale = self.sales.get(rcpt.strip())
                if sale is None:
                    continue
                got = self.arrived.setdefault(sale.email, set())
                got.add(str(head["Message-ID"] or path))
                if sale.tickets and not sale.done and len(got) >= len(sale.tickets):
                    sale.done = now

    async def until_done(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.to_thread(self.poll)
            if all(s.done for s in self.sales.values()):
                return
            await asyncio.sleep(0.02)

    def count(self) -> dict[str, int]:
        """Confirmation emails (every copy) per ticket id of the sales."""
        copies: dict[str, int] = {}
        for path in self.mailbox.paths():
            message = read_message(path)
            if not (message.subject or "").startswith("Your ticket for"):
                continue
            text = message.text or ""
            for rcpt in message.rcpt_tos:
                sale = self.sales.get(rcpt)
                for ticket in sale.tickets if sale else ():
                    if ticket in text:
                        copies[ticket] = copies.get(ticket, 0) + 1
        return copies


def on_chain(mesh: ProcessMesh) -> dict[str, int]:
    """Every Token-2022 mint account on chain → its supply."""
    supply: dict[str, int] = {}
    for item in mesh.chain.rpc("getProgramAccounts", [str(TOKEN_2022), {"encoding": "base64"}]):
        data = base64.b64decode(item["account"]["data"][0])
        if len(data) > 165 and data[165] == 1:
            supply[item["pubkey"]] = struct.unpack_from("<Q", data, 36)[0]
    return supply


class CpuMeter:
    """CPU seconds used by each part of the mesh (a process and its children, e.g. PostgreSQL's
    backends), between `start()` and `stop()`: where the time goes."""

    def __init__(self, mesh: ProcessMesh) -> None:
        self.mesh = mesh
        self.before: dict[str, float] = {}

    def parts(self) -> dict[str, int | None]:
        mesh = self.mesh
        pids: dict[str, int | None] = {
            name: svc.proc.pid if svc.proc else None for name, svc in mesh.services.items()
        }
        pids.update(
            postgres=mesh.postgres.pid,
            redis=mesh.redis.pid,
            chain=mesh.chain.pid,
            smtp_sink=mesh.smtp.pid,
            stripe=mesh.stripe.pid,
            bench=os.getpid(),
        )
        return pids

    def read(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, pid in self.parts().items():
            if pid is None:
                continue
            try:
                root = psutil.Process(pid)
                procs = [root] if name == "bench" else [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            total = 0.0
            for proc in procs:
                try:
                    times = proc.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += times.user + times.system
            used[name] = total
        return used

    def start(self) -> None:
        self.before = self.read()

    def stop(self, purchases: int) -> str:
        """CPU milliseconds per purchase, per part."""
        after = self.read()
        per = {
            name: (after[name] - self.before.get(name, 0.0)) * 1000 / purchases for name in after
        }
        shown = sorted(((v, k) for k, v in per.items() if v >= 0.05), reverse=True)
        total = sum(v for v, _ in shown)
        return f"{total:.1f} ms: " + ", ".join(f"{k} {v:.1f}" for v, k in shown)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def baseline(mesh: ProcessMesh, purchases: int) -> tuple[float, str]:
    await sell(mesh, WARMUP, {})
    meter = CpuMeter(mesh)
    meter.start()
    started, ended = await sell(mesh, purchases, {})
    return purchases / (ended - started), meter.stop(purchases)


async def drop_staged(mesh: ProcessMesh) -> int:
    conn = await asyncpg.connect(mesh.postgres.url)
    try:
        tag = await conn.execute("DELETE FROM payment.outbox WHERE delivered_at IS NULL")
    finally:
        await conn.close()
    return int(tag.split()[-1])


async def journey(
    mesh: ProcessMesh, purchases: int
) -> tuple[dict[str, Sale], dict[str, Sale], float, MailWatch]:
    watch = MailWatch(Mailbox(mesh.mail_dir), {})
    warm: dict[str, Sale] = {}
    watch.sales = warm
    await sell(mesh, WARMUP, warm)
    await watch.until_done(time.monotonic() + 60)
    sales: dict[str, Sale] = {}
    watch.sales = sales
    watch.poll()  # the warm-up's mail is seen; only new files count from here
    meter = CpuMeter(mesh)
    conn = await asyncpg.connect(mesh.postgres.url)
    try:
        since = await conn.fetchval("SELECT clock_timestamp()")
        meter.start()
        started, sold = await sell(mesh, purchases, sales)
        await watch.until_done(sold + SETTLE_S)
        done = [s.done for s in sales.values() if s.done]
        ended = max(done) if len(done) == len(sales) else time.monotonic()
        print(f"journey CPU per purchase: {meter.stop(purchases)}", flush=True)
        print(f"journey stages: {await stages(conn, since)}", flush=True)
    finally:
        await conn.close()
    await asyncio.sleep(2.0)  # anything still on its way (a duplicate) lands
    watch.poll()
    return warm, sales, len(done) / (ended - started), watch


STAGES = {
    # stage: when each of its items finished, from the services' own rows (a bench may read them)
    "paid": "SELECT succeeded_at AS t FROM payment.payments WHERE succeeded_at > $1",
    "mint queued": "SELECT created_at AS t FROM nft.mint_jobs WHERE created_at > $1",
    "minted": "SELECT minted_at AS t FROM nft.ticket_nfts WHERE minted_at > $1",
    "email queued": "SELECT created_at AS t FROM notify.notifications WHERE created_at > $1",
    "email sent": "SELECT sent_at AS t FROM notify.notifications WHERE sent_at > $1",
}


async def stages(conn: asyncpg.Connection, since: datetime) -> str:
    """How fast each stage went (items/s from its first to its last) and when it ended: the
    slowest stage is the journey's bottleneck."""
    shown = []
    for stage, sql in STAGES.items():
        times = sorted((row["t"] - since).total_seconds() for row in await conn.fetch(sql, since))
        if len(times) < 2:
            continue
        rate = len(times) / max(times[-1] - times[0], 1e-3)
        shown.append(f"{stage} {rate:.0f}/s (last at {times[-1]:.1f}s)")
    return ", ".join(shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--purchases", type=int, default=PURCHASES)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SERVICE:VAR=VALUE",
        help="a setting for one service, e.g. nft:NFT_WORKER_CONCURRENCY=32 (repeatable)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the tests' short polls, retries and leases (ProcessMesh.QUICK) instead of the "
        "services' defaults",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-journey-"))
    # The providers' published limits are theirs, not ours to measure: Stripe 90/s, a public
    # Solana RPC endpoint 9/s. Everything else keeps the services' defaults (or QUICK).
    unlimited = {"rate": None, "concurrency": None}
    service_env = {
        "payment": {
            "PROVIDER_POLICIES": json.dumps({"stripe": unlimited}),
            "RELAY_ENABLED": "false",
        },
        "nft": {"PROVIDER_POLICIES": json.dumps({"solana": unlimited})},
    }
    if args.quick:
        service_env["nft"] = {}  # QUICK lifts the solana limits already
    for setting in args.set:
        service, _, assignment = setting.partition(":")
        name, _, value = assignment.partition("=")
        service_env.setdefault(service, {})[name] = value
    mesh = ProcessMesh(
        work,
        services=("payment", "nft", "notify"),
        stripe="fast",
        quick=args.quick,
        env={"ACCESS_LOG": "false", "RECONCILE_INTERVAL_S": "0"},
        service_env=service_env,
    )
    print(f"starting the mesh in {work} ...", flush=True)
    mesh.start()
    try:
        base_rate, base_cpu = asyncio.run(baseline(mesh, args.purchases))
        print(f"CreatePayment alone: {base_rate:.1f} purchases/s ({BUYERS} buyers)", flush=True)
        print(f"CreatePayment CPU per purchase: {base_cpu}", flush=True)
        dropped = asyncio.run(drop_staged(mesh))
        payment = mesh.services["payment"]
        payment.env["RELAY_ENABLED"] = "true"
        mesh.restart("payment")
        print(f"journey (baseline's {dropped} staged events dropped) ...", flush=True)
        warm, sales, rate, watch = asyncio.run(journey(mesh, args.purchases))
        latencies = [s.done - s.sent for s in sales.values() if s.done]
        dev = mesh.dev_dir
        payer = parse_keypair(ensure_dev_payer(dev).read_text(), source="dev").pubkey()
        derive = Derivation(ensure_dev_secret(dev).encode())
        supply = on_chain(mesh)

        def mints(group: dict[str, Sale]) -> dict[str, str]:
            return {
                str(mint_address(payer, derive.mint_seed(s.payment_id, t))): t
                for s in group.values()
                for t in s.tickets
            }

        ours = mints(sales)
        tickets = list(ours.values())
        no_mint = sum(1 for mint in ours if supply.get(mint) != 1)
        copies = watch.count()
        no_email = sum(1 for t in tickets if not copies.get(t))
        # Every mint on chain is some ticket's (this phase's or the warm-up's): no second mint.
        extra_mints = len(set(supply) - set(ours) - set(mints(warm)))
        extra_emails = sum(max(0, n - 1) for n in copies.values())
        lost = no_mint + no_email
        duplicated = extra_mints + extra_emails
        print(
            f"journey: {len(sales)} purchases, {len(tickets)} tickets, {len(latencies)} complete; "
            f"mints missing {no_mint}, emails missing {no_email}, extra mints {extra_mints}, "
            f"extra emails {extra_emails}; mean latency "
            f"{statistics.fmean(latencies) if latencies else 0:.2f}s",
            flush=True,
        )
        print(
            f"journey: ratio={rate / base_rate:.3f} purchases_per_s={rate:.1f} "
            f"p50_s={pct(latencies, 0.5):.2f} p99_s={pct(latencies, 0.99):.2f} "
            f"lost={lost} duplicated={duplicated}",
            flush=True,
        )
    finally:
        mesh.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
