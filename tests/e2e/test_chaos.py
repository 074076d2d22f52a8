"""Chaos: purchases and refunds while every process of the mesh dies at random moments.

The mesh runs as processes, like `make run` (`meshdev.procmesh.ProcessMesh`): its own embedded
PostgreSQL and Redis, localstripe behind the idempotency proxy (signed webhooks to payment's
HTTP port), the SMTP sink writing `.eml` files, a LiteSVM Solana node as its own process (nft
runs `SOLANA_CHAIN=rpc` against it, so the chain outlives every nft process), and payment, nft,
notify and integration as `python -m <service>` processes. For `CHAOS_S` seconds, buyers
purchase tickets (each request retried with its own idempotency key until answered, as a real
client does); some purchases are refunded at once (usually before the mint), some after their
tickets are minted (one ticket or the whole order). Meanwhile a seeded schedule SIGKILLs every
service at least once (more at random) and starts it again, restarts PostgreSQL once (fast
shutdown: every session aborted) and Redis once (it keeps nothing: leases, limits and breakers
are gone). One purchase is a permanent failure the test injects: an order without the event's
facts, which nft refuses (INVALID_ARGUMENT), so its PaymentSucceeded is dead-lettered at once.

At the end, while the last purchases and their mints and emails are on their way, every
service is killed at once and started again; when everything runs again, the mesh must converge
within `CONVERGE_S` seconds (the stated bound): outboxes delivered, nft's mint queue and
notify's queue drained, and

* every succeeded payment has exactly one NFT per ticket on chain — read from the chain
  (`getProgramAccounts` of Token-2022: every mint account there is some ticket's derived mint
  address, and each kept ticket's mint holds supply 1 in an unfrozen account), not our tables;
* every refunded ticket is revoked on chain (burned or frozen) or was never minted;
* exactly one confirmation email per kept minted ticket is in the SMTP sink, and one refund
  email per refund. Counted as distinct Message-IDs: notify re-sends a message whose worker
  was killed between the SMTP server's acceptance and notify's commit, after its lease, with
  the same Message-ID (the documented "at most one extra copy per such crash"), so copies with
  one Message-ID are one message. A refunded ticket has at most one confirmation (none if it was
  never minted);
* payment's ledger is balanced (`payment_service.store.ledger.check`);
* nothing is dead-lettered (outboxes, mints, notifications) except the injected refusal.

The randomness is seeded: `CHAOS_SEED=<n>` replays a run's schedule (what is killed or
restarted, when, for how long) and its buyers' choices (tickets, which purchases are refunded,
when and how); the seed is printed at the start and named in every assertion message. The run
prints what it did and the counts it checked (purchases, tickets, refunds, kills, mints on
chain, emails).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
import pytest_asyncio
from solders.pubkey import Pubkey

from meshdev.launcher import DEMO_VENUE
from meshdev.procmesh import ProcessMesh
from meshdev.standins.smtp import Mailbox
from meshdev.testing.rpc import retry_delay
from nft_service.adapters.chain.token import TOKEN_2022, mint_address
from nft_service.adapters.keys import Derivation, ensure_dev_payer, ensure_dev_secret, parse_keypair
from payment_service.store import ledger
from tickettoken.common.v1 import common_pb2
from tickettoken.nft.v1 import nft_pb2, nft_pb2_grpc
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

pytestmark = pytest.mark.e2e

T = TypeVar("T")

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**31))
CHAOS_S = 30.0  # purchases, refunds and kills for this long
CONVERGE_S = 60.0  # the bound: everything settled this long after the last restart
BUYERS = 3
EVENT_NAME = "The Band: Chaos Tour"
SERVICES = ("payment", "nft", "notify", "integration")
# Codes a client retries with the same key (the rest are answers).
FINAL = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
_MINT_SUPPLY = struct.Struct("<Q")


def seeded(what: str) -> str:
    return f"[CHAOS_SEED={SEED}] {what}"


@dataclass
class Purchase:
    payment_id: str
    buyer_id: str
    email: str
    tickets: list[str]
    injected: bool = False
    refunds: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (id, tickets)

    @property
    def refunded(self) -> set[str]:
        gone: set[str] = set()
        for _, tickets in self.refunds:
            gone.update(tickets or self.tickets)  # a full refund names no ticket: all of them
        return gone


@dataclass
class Chaos:
    mesh: ProcessMesh
    pay: payment_pb2_grpc.PaymentServiceAsyncStub
    nft: nft_pb2_grpc.NftServiceAsyncStub
    purchases: list[Purchase] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    restarts: list[asyncio.Future[None]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.started:6.2f}s {what}")

    def md(self, aud: str, sub: str = "admin-chaos", role: str = "admin") -> Any:
        return self.mesh.metadata(aud, sub=sub, roles=(role,))


async def answered(send: Callable[[], Awaitable[T]], what: str, timeout: float = 90.0) -> T:
    """Retry one request (same key) until it is answered, as a client would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await send()
        except grpc.aio.AioRpcError as err:
            if err.code() in FINAL:
                raise
            if time.monotonic() > deadline:
                raise AssertionError(seeded(f"{what} never answered: {err.code().name}")) from err
            await asyncio.sleep(retry_delay(err) or 0.2)


# -- buyers --------------------------------------------------------------------------------------


def event_details(*, empty: bool = False) -> payment_pb2.EventDetails:
    if empty:
        return payment_pb2.EventDetails()  # nft refuses a ticket it cannot describe
    details = payment_pb2.EventDetails(event_name=EVENT_NAME, venue_name="Ryman Auditorium")
    details.starts_at.FromDatetime(datetime(2030, 10, 2, 1, 0, tzinfo=UTC))
    return details


async def buy(chaos: Chaos, tickets: int, *, injected: bool = False) -> Purchase:
    buyer = f"buyer-{uuid.uuid4().hex[:10]}"
    email = f"{buyer}@example.com"
    request = payment_pb2.CreatePaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        order_id=f"order-{uuid.uuid4().hex[:10]}",
        venue_id=DEMO_VENUE,
        event_id="event-chaos",
        buyer_id=buyer,
        currency="USD",
        payment_method_id="pm_card_visa",
        line_items=[
            payment_pb2.LineItem(
                ticket_type_id="ga",
                unit_price=common_pb2.Money(currency="USD", amount_minor=5_000),
                quantity=tickets,
            )
        ],
        buyer_contact=common_pb2.ContactInfo(name="Ada", email=email),
        event=event_details(empty=injected),
    )
    md = chaos.md("payment", buyer, "buyer")
    reply = await answered(
        lambda: chaos.pay.CreatePayment(request, metadata=md, timeout=10), "CreatePayment"
    )
    payment = reply.payment
    assert payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED, seeded(str(payment))
    ids = [t for line in payment.line_items for t in line.ticket_ids]
    purchase = Purchase(payment.id, buyer, email, ids, injected=injected)
    chaos.purchases.append(purchase)
    return purchase


async def refund(chaos: Chaos, purchase: Purchase, tickets: tuple[str, ...]) -> None:
    request = payment_pb2.RefundPaymentRequest(
        idempotency_key=str(uuid.uuid4()),
        payment_id=purchase.payment_id,
        reason=payment_pb2.REFUND_REASON_REQUESTED_BY_CUSTOMER,
        ticket_ids=list(tickets),
    )
    if tickets:
        request.amount.CopyFrom(common_pb2.Money(currency="USD", amount_minor=5_000 * len(tickets)))
    md = chaos.md("payment")
    try:
        reply = await answered(
            lambda: chaos.pay.RefundPayment(request, metadata=md, timeout=10), "RefundPayment"
        )
    except grpc.aio.AioRpcError as err:
        now = await answered(
            lambda: chaos.pay.GetPayment(
                payment_pb2.GetPaymentRequest(payment_id=purchase.payment_id), metadata=md
            ),
            "GetPayment",
        )
        chaos.note(f"refund of {purchase.payment_id} refused: {err.details()}")
        raise AssertionError(
            seeded(f"refund of {purchase.payment_id} refused: {err.details()}; now {now.payment}")
        ) from err
    purchase.refunds.append((reply.refund.id, tickets))


async def wait_minted(chaos: Chaos, ticket_id: str, timeout: float = 20.0) -> bool:
    md = chaos.md("nft")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = await chaos.nft.GetTicketNft(
                nft_pb2.GetTicketNftRequest(ticket_id=ticket_id), metadata=md, timeout=5
            )
            if reply.nft.status == nft_pb2.TICKET_NFT_STATUS_ACTIVE:
                return True
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    return False


async def buyer(chaos: Chaos, index: int, until: float) -> None:
    rng = random.Random(f"{SEED}-buyer-{index}")
    while time.monotonic() < until:
        purchase = await buy(chaos, rng.choice((1, 2)))
        roll = rng.random()
        if roll < 0.2:  # refunded at once: usually before the mint
            await refund(chaos, purchase, ())
        elif roll < 0.4:  # refunded after the mint: one ticket, or the whole order
            await wait_minted(chaos, purchase.tickets[0])
            one = len(purchase.tickets) > 1 and rng.random() < 0.5
            await refund(chaos, purchase, (purchase.tickets[0],) if one else ())
        await asyncio.sleep(rng.uniform(0.05, 0.4))


# -- the chaos schedule --------------------------------------------------------------------------


def schedule(rng: random.Random) -> list[tuple[float, str, float]]:
    """(at, what, down_s): every service killed at least once, a few more kills, PostgreSQL and
    Redis restarted once each, apart from each other."""
    events = [
        (rng.uniform(2, CHAOS_S - 4), f"kill {name}", rng.uniform(0.1, 1.5)) for name in SERVICES
    ]
    events += [
        (rng.uniform(2, CHAOS_S - 4), f"kill {rng.choice(SERVICES[:3])}", rng.uniform(0.1, 1.5))
        for _ in range(6)
    ]
    pg_at = rng.uniform(6, CHAOS_S / 2)
    redis_at = rng.uniform(CHAOS_S / 2 + 2, CHAOS_S - 4)
    events += [(pg_at, "restart postgres", rng.uniform(0.5, 2)), (redis_at, "restart redis", 0.5)]
    # At the end, with the last purchases' mints and emails on their way: everything at once.
    events.append((CHAOS_S - 1.5, "kill all", rng.uniform(0.5, 1.5)))
    return sorted(events)


async def supervise(chaos: Chaos, until: float) -> None:
    """Start again any service that died and is not meant to be down (what an orchestrator
    does), e.g. one that exited while PostgreSQL was away."""
    while time.monotonic() < until:
        for name in chaos.mesh.dead():
            if name not in chaos.down:
                chaos.note(f"{name} found dead; started")
                chaos.mesh.services[name].spawn()
        await asyncio.sleep(0.3)


async def run_schedule(chaos: Chaos, events: list[tuple[float, str, float]]) -> None:
    for at, what, down_s in events:
        await asyncio.sleep(max(0.0, chaos.started + at - time.monotonic()))
        name = what.split()[1]
        chaos.note(f"{what} (down {down_s:.1f}s)")
        if name == "postgres":
            await asyncio.to_thread(chaos.mesh.restart_postgres, down_s)
        elif name == "redis":
            await asyncio.to_thread(chaos.mesh.restart_redis, down_s)
        else:
            names = SERVICES if name == "all" else (name,)
            chaos.down.update(names)
            for each in names:
                chaos.mesh.kill(each)  # SIGKILL

            async def back(names: tuple[str, ...] = names, down_s: float = down_s) -> None:
                await asyncio.sleep(down_s)
                for each in names:
                    chaos.mesh.services[each].spawn()
                    chaos.down.discard(each)

            chaos.restarts.append(asyncio.ensure_future(back()))


# -- reading the outcome -------------------------------------------------------------------------


@dataclass
class Chain:
    """Token-2022 accounts on chain: mints (address → supply) and token accounts by mint."""

    supply: dict[str, int]
    holdings: dict[str, list[tuple[int, bool]]]  # mint → [(amount, frozen)]


def read_chain(mesh: ProcessMesh) -> Chain:
    supply: dict[str, int] = {}
    holdings: dict[str, list[tuple[int, bool]]] = {}
    for item in mesh.chain.rpc("getProgramAccounts", [str(TOKEN_2022), {"encoding": "base64"}]):
        data = base64.b64decode(item["account"]["data"][0])
        kind = data[165] if len(data) > 165 else 2  # 165 bytes exactly: a plain token account
        if kind == 1:  # mint: supply u64 at 36
            supply[item["pubkey"]] = _MINT_SUPPLY.unpack_from(data, 36)[0]
        elif kind == 2:  # token account: mint, owner, amount u64 at 64, state at 108
            mint = str(Pubkey.from_bytes(data[:32]))
            amount = _MINT_SUPPLY.unpack_from(data, 64)[0]
            holdings.setdefault(mint, []).append((amount, data[108] == 2))
    return Chain(supply, holdings)


@dataclass
class Mail:
    """The sink's messages by recipient: confirmations as (Message-ID, text), refunds' ids."""

    confirmations: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    refunds: dict[str, set[str]] = field(default_factory=dict)

    def confirmations_of(self, email: str, ticket: str) -> set[str]:
        """Distinct Message-IDs of the confirmations naming `ticket` sent to `email`."""
        return {mid for mid, text in self.confirmations.get(email, []) if ticket in text}


def read_mail(mailbox: Mailbox) -> Mail:
    mail = Mail()
    for message in mailbox.messages():
        subject = message.subject or ""
        mid = message.message_id or str(message.path)
        for rcpt in message.rcpt_tos:
            if subject == f"Your ticket for {EVENT_NAME}":
                mail.confirmations.setdefault(rcpt, []).append((mid, message.text or ""))
            elif subject == f"Your refund for {EVENT_NAME}":
                mail.refunds.setdefault(rcpt, set()).add(mid)
    return mail


async def quiet(conn: asyncpg.Connection) -> list[str]:
    """What is still on its way (outboxes, queues); empty when the mesh is at rest."""
    waiting = []
    checks = {
        "payment outbox": "SELECT count(*) FROM payment.outbox WHERE delivered_at IS NULL",
        "nft outbox": "SELECT count(*) FROM nft.outbox WHERE delivered_at IS NULL",
        "nft mints": "SELECT count(*) FROM nft.ticket_nfts "
        "WHERE mint_state IN ('QUEUED', 'SUBMITTED', 'RETRYING')",
        "nft revocations": "SELECT count(*) FROM nft.ticket_nfts "
        "WHERE revoke_requested_at IS NOT NULL AND status <> 'REVOKED'",
        "notify queue": "SELECT count(*) FROM notify.notifications "
        "WHERE status IN ('QUEUED', 'SENDING')",
    }
    for what, sql in checks.items():
        n = await conn.fetchval(sql)
        if n:
            waiting.append(f"{what}: {n}")
    return waiting


async def problems(chaos: Chaos, conn: asyncpg.Connection) -> list[str]:
    """Every way the outcome differs from the promise (empty: converged and correct)."""
    chaos.counts.clear()
    found = [f"still on its way: {w}" for w in await quiet(conn)]
    dev_dir = chaos.mesh.dev_dir
    payer = parse_keypair(ensure_dev_payer(dev_dir).read_text(), source="dev").pubkey()
    derive = Derivation(ensure_dev_secret(dev_dir).encode())
    chain = await asyncio.to_thread(read_chain, chaos.mesh)
    mail = await asyncio.to_thread(read_mail, Mailbox(chaos.mesh.mail_dir))
    expected_mints: set[str] = set()
    for purchase in chaos.purchases:
        gone = purchase.refunded
        for ticket in purchase.tickets:
            mint = str(mint_address(payer, derive.mint_seed(purchase.payment_id, ticket)))
            expected_mints.add(mint)
            where = f"ticket {ticket} of payment {purchase.payment_id}"
            mails = len(mail.confirmations_of(purchase.email, ticket))
            on_chain = mint in chain.supply
            if purchase.injected:
                if on_chain or mails:
                    found.append(f"{where}: refused order, yet minted or confirmed")
                continue
            live = [a for a, frozen in chain.holdings.get(mint, []) if a and not frozen]
            if ticket in gone:
                if on_chain and chain.supply[mint] and live:
                    found.append(f"{where}: refunded but not revoked on chain")
                if mails > 1 or (mails and not on_chain):
                    found.append(f"{where}: refunded, {mails} confirmations, on chain {on_chain}")
                continue
            if not on_chain:
                found.append(f"{where}: not on chain")
            elif chain.supply[mint] != 1 or live != [1]:
                found.append(f"{where}: supply {chain.supply[mint]}, live holdings {live}")
            if mails != 1:
                found.append(f"{where}: {mails} confirmation emails (distinct Message-IDs)")
        refund_mails = len(mail.refunds.get(purchase.email, ()))
        if refund_mails != len(purchase.refunds):
            found.append(
                f"payment {purchase.payment_id}: {len(purchase.refunds)} refunds, "
                f"{refund_mails} refund emails"
            )
    chaos.counts["mints on chain"] = len(chain.supply)
    chaos.counts["confirmations"] = sum(
        len({mid for mid, _ in sent}) for sent in mail.confirmations.values()
    )
    chaos.counts["refund emails"] = sum(len(ids) for ids in mail.refunds.values())
    stray = sorted(set(chain.supply) - expected_mints)
    if stray:
        found.append(f"{len(stray)} mints on chain that are no ticket's: {stray[:3]}")
    await conn.execute("SET search_path TO payment")
    found += [f"ledger: {p}" for p in await ledger.check(conn)]
    await conn.execute("SET search_path TO public")
    injected = {p.payment_id for p in chaos.purchases if p.injected}
    for schema in ("payment", "nft"):
        for row in await conn.fetch(f"SELECT key, last_error FROM {schema}.outbox_dead_letters"):
            refused = str(row["last_error"] or "").startswith(
                "undeliverable: nft.mint_tickets: INVALID_ARGUMENT"
            )
            if not (schema == "payment" and row["key"] in injected and refused):
                found.append(f"{schema} dead letter {row['key']}: {row['last_error']}")
    dead_payment = {
        r["key"] for r in await conn.fetch("SELECT key FROM payment.outbox_dead_letters")
    }
    if dead_payment != injected:
        found.append(f"the injected refusal is not dead-lettered: {injected - dead_payment}")
    bad = await conn.fetchval(
        "SELECT count(*) FROM nft.ticket_nfts WHERE mint_state IN ('FAILED', 'DEAD_LETTERED')"
    )
    if bad:
        found.append(f"{bad} mints failed or dead-lettered")
    bad = await conn.fetchval(
        "SELECT count(*) FROM notify.notifications WHERE status IN ('FAILED', 'DEAD_LETTERED')"
    )
    if bad:
        found.append(f"{bad} notifications failed or dead-lettered")
    return found


# -- the test ------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def mesh() -> AsyncIterator[ProcessMesh]:
    print(f"\nchaos: CHAOS_SEED={SEED} (set it to replay this run)")
    # Under the system temp dir, not pytest's (private, and re-locked by any pytest run that
    # starts meanwhile): PostgreSQL runs as another user when we are root.
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    mesh = ProcessMesh(work, services=SERVICES, stripe="localstripe")
    await asyncio.to_thread(mesh.start)
    try:
        yield mesh
    finally:
        await asyncio.to_thread(mesh.stop)
        shutil.rmtree(work, ignore_errors=True)


# Start-up, CHAOS_S, the convergence bound and the stop, on a busy box.
@pytest.mark.timeout(60 + CHAOS_S + CONVERGE_S + 60)
async def test_no_ticket_or_email_is_lost_or_doubled_however_the_processes_die(
    mesh: ProcessMesh,
) -> None:
    async with (
        grpc.aio.insecure_channel(mesh.services["payment"].target, options=CHANNEL_OPTIONS) as a,
        grpc.aio.insecure_channel(mesh.services["nft"].target, options=CHANNEL_OPTIONS) as b,
    ):
        chaos = Chaos(
            mesh,
            payment_pb2_grpc.PaymentServiceStub(a),
            nft_pb2_grpc.NftServiceStub(b),
        )
        rng = random.Random(SEED)
        events = schedule(rng)
        until = chaos.started + CHAOS_S
        await buy(chaos, 1, injected=True)
        try:
            await asyncio.gather(
                run_schedule(chaos, events),
                supervise(chaos, until + 2),
                *(buyer(chaos, i, until) for i in range(BUYERS)),
            )
        finally:
            print("\n".join(["chaos: " + line for line in chaos.log]))

    # Everything running again; then the mesh has CONVERGE_S to settle (claims the killed
    # workers held come back after their leases).
    await asyncio.gather(*chaos.restarts)
    chaos.down.clear()
    restarted = await asyncio.to_thread(mesh.ensure_running)
    chaos.note(f"chaos over; started again: {', '.join(restarted) or 'nothing'}")
    settled_from = time.monotonic()
    conn = await asyncpg.connect(mesh.postgres.url)
    try:
        while True:
            found = await problems(chaos, conn)
            took = time.monotonic() - settled_from
            if not found or took > CONVERGE_S:
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    tickets = sum(len(p.tickets) for p in chaos.purchases)
    refunded = sum(len(p.refunded) for p in chaos.purchases)
    kills = {name: svc.kills for name, svc in mesh.services.items()}
    summary = (
        f"{len(chaos.purchases)} purchases, {tickets} tickets, {refunded} refunded, kills {kills}, "
        f"postgres and redis restarted once; {chaos.counts}; "
        f"converged in {took:.1f}s (bound {CONVERGE_S:g}s)"
    )
    print(chaos.log[-1])
    print(seeded(summary))
    assert not found, seeded(
        f"not converged within {CONVERGE_S:g}s ({summary}):\n  " + "\n  ".join(found[:30])
    )
    assert all(kills[name] >= 1 for name in SERVICES), seeded(f"not every service killed: {kills}")
    assert any(p.refunds for p in chaos.purchases), seeded("no refund was made")
