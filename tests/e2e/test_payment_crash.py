"""kill -9 of the payment process in the middle of bursts of purchases and refunds.

The payment service runs as its own process (as `make run` starts it) against the embedded
Postgres and Redis and localstripe behind the idempotency proxy (Stripe's own semantics).
Several clients buy (then refund) concurrently, each retrying its own request with its own
idempotency key until it gets an answer, as a real client would. Partway through, the process is
killed with SIGKILL — no drain, no cleanup, calls in flight at Stripe — and started again with
the same configuration. Afterwards:

* every order has exactly one payment, and every payment settled (SUCCEEDED);
* the Stripe stand-in holds exactly one PaymentIntent per payment (the keys sent on the retries
  after the crash were the same as before it);
* the ledger is balanced and complete;
* the requests the dead process held were recovered within the idempotency lock bound
  (`IDEMPOTENCY_LOCK_S` after the restart, plus a retry delay);
* a burst of partial refunds with a kill never refunds more than was captured, and makes
  exactly one Stripe refund per refund.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshdev.embedded import LocalStripe, free_port
from meshdev.testing.rpc import retry_delay
from meshdev.testing.servers import TestTokens
from meshkit.db import Database
from payment_service.domain.fees import Jurisdiction
from payment_service.store import ledger, venues
from tests.e2e.conftest import REPO
from tickettoken.common.v1 import common_pb2
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

pytestmark = pytest.mark.e2e

AUD = "tickettoken.payment"
STRIPE_KEY = "sk_test_tickettoken_crash"
VENUE = "venue-crash"
LOCK_S = 5.0  # IDEMPOTENCY_LOCK_S, the bound a dead holder's keys are recovered within
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with LocalStripe(tmp_path_factory.mktemp("crash-localstripe")) as server:
        yield server


class PaymentProcess:
    """`python -m payment_service` with fixed ports, so clients reconnect after a restart."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path(env["DEV_DIR"]) / f"payment-{port}.log"

    def start(self) -> float:
        """Start and wait until SERVING; return the moment it was."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "payment_service"],
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
                        return time.monotonic()
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "payment never became SERVING"
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


@dataclass
class Outcome:
    order_id: str
    key: str
    first_sent: float = 0.0
    done_at: float = 0.0
    attempts: int = 0
    reply: Any = None
    codes: list[str] = field(default_factory=list)


async def until_answered(
    send: Callable[[], Awaitable[Any]], outcome: Outcome, timeout: float = 120.0
) -> Any:
    """Retry one request (same key) until it is answered, sleeping RetryInfo's delay."""
    outcome.first_sent = time.monotonic()
    deadline = outcome.first_sent + timeout
    while True:
        outcome.attempts += 1
        try:
            outcome.reply = await send()
            outcome.done_at = time.monotonic()
            return outcome.reply
        except grpc.aio.AioRpcError as err:
            if err.code() not in RETRYABLE:
                raise
            outcome.codes.append(err.code().name)
            assert time.monotonic() < deadline, f"{outcome.order_id} never answered: {err}"
            await asyncio.sleep(retry_delay(err) or 0.2)


@dataclass
class Mesh:
    process: PaymentProcess
    db: Database
    stripe: LocalStripe
    tokens: TestTokens

    def stub(self, channel: grpc.aio.Channel) -> payment_pb2_grpc.PaymentServiceStub:
        return payment_pb2_grpc.PaymentServiceStub(channel)

    def buyer(self, buyer_id: str) -> tuple[tuple[str, str], ...]:
        return self.tokens.metadata(self.tokens.user(buyer_id, ["buyer"], aud=AUD, ttl=600))

    def admin(self) -> tuple[tuple[str, str], ...]:
        return self.tokens.metadata(self.tokens.user("admin-1", ["admin"], aud=AUD, ttl=600))

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.process.port}")


@pytest_asyncio.fixture(loop_scope="session")
async def mesh(
    postgres_url: str, redis_url: str, dev_dir: Path, tokens: TestTokens, stripe: LocalStripe
) -> AsyncIterator[Mesh]:
    schema = f"crash_{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"APP_ENV", "DATABASE_URL"}},
        "APP_ENV": "test",
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "DB_SCHEMA": schema,
        "GRPC_PORT": str(port),
        "OPS_PORT": "0",
        "HTTP_PORT": str(free_port()),
        "DEV_DIR": str(dev_dir),
        "GUARD_KEY_PREFIX": f"guard-{schema}",
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRET": "whsec_test_tickettoken_crash",
        "STRIPE_API_BASE": stripe.url,
        "STRIPE_DEV_REGISTER_WEBHOOK": "true",
        "IDEMPOTENCY_LOCK_S": str(LOCK_S),
        "RECONCILE_INTERVAL_S": "0",
        "FUNDS_HOLD_S": "0",
        "REFUND_RATE_LIMIT_PER_MINUTE": "0",
        "ACCESS_LOG": "false",
        "HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    process = PaymentProcess(env, port)
    process.start()
    db = await Database.connect(postgres_url, schema=schema, min_size=1, max_size=4)
    async with db.acquire() as conn:
        await venues.upsert(conn, VENUE, Jurisdiction("US", "TN", "Nashville"))
    try:
        yield Mesh(process, db, stripe, tokens)
    finally:
        process.stop()
        await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await db.close()


def create_request(buyer_id: str, order_id: str, key: str) -> payment_pb2.CreatePaymentRequest:
    return payment_pb2.CreatePaymentRequest(
        idempotency_key=key,
        order_id=order_id,
        venue_id=VENUE,
        event_id="event-crash",
        buyer_id=buyer_id,
        currency="USD",
        payment_method_id="pm_card_visa",
        line_items=[
            payment_pb2.LineItem(
                ticket_type_id="ga",
                unit_price=common_pb2.Money(currency="USD", amount_minor=5_000),
                quantity=2,
            )
        ],
        buyer_contact=common_pb2.ContactInfo(email=f"{buyer_id}@example.com"),
    )


async def intents_at_standin(stripe: LocalStripe) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30, auth=(STRIPE_KEY, "")) as http:
        reply = await http.get(stripe.raw_url + "/v1/payment_intents", params={"limit": 10_000})
        reply.raise_for_status()
        return list(reply.json()["data"])


async def refunds_at_standin(stripe: LocalStripe) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=30, auth=(STRIPE_KEY, "")) as http:
        reply = await http.get(stripe.raw_url + "/v1/refunds", params={"limit": 10_000})
        reply.raise_for_status()
        return list(reply.json()["data"])


async def kill_and_restart_when(mesh: Mesh, ready: Callable[[], bool]) -> tuple[float, float]:
    """SIGKILL the process once `ready()` holds, then start it again; (killed, serving) times."""
    while not ready():
        await asyncio.sleep(0.02)
    mesh.process.kill()
    killed = time.monotonic()
    serving = await asyncio.to_thread(mesh.process.start)
    return killed, serving


async def test_kill_during_a_purchase_burst_loses_and_doubles_nothing(mesh: Mesh) -> None:
    clients, per_client = 6, 5
    outcomes = [
        Outcome(order_id=f"order-{c}-{n}-{uuid.uuid4().hex[:6]}", key=str(uuid.uuid4()))
        for c in range(clients)
        for n in range(per_client)
    ]
    done: list[Outcome] = []

    async def client(c: int) -> None:
        buyer = f"buyer-crash-{c}"
        async with mesh.channel() as channel:
            stub = mesh.stub(channel)
            for outcome in outcomes[c * per_client : (c + 1) * per_client]:
                request = create_request(buyer, outcome.order_id, outcome.key)
                await until_answered(
                    lambda r=request: stub.CreatePayment(r, metadata=mesh.buyer(buyer), timeout=30),
                    outcome,
                )
                done.append(outcome)

    burst = [asyncio.create_task(client(c)) for c in range(clients)]
    killed, serving = await kill_and_restart_when(mesh, lambda: len(done) >= 8)
    await asyncio.gather(*burst)

    # Every order: one payment, settled.
    rows = await mesh.db.fetch(
        "SELECT order_id, count(*) AS n, min(status) AS status, min(provider_payment_id) AS pi, "
        "min(id::text) AS id FROM payments WHERE venue_id = $1 GROUP BY order_id",
        VENUE,
    )
    by_order = {r["order_id"]: r for r in rows}
    assert set(by_order) == {o.order_id for o in outcomes}
    assert all(r["n"] == 1 for r in rows)
    assert {r["status"] for r in rows} == {"SUCCEEDED"}
    assert all(o.reply.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED for o in outcomes)
    # One PaymentIntent per payment at the stand-in (every intent we create carries our payment
    # id in its metadata): the retries after the crash reused the first Stripe key.
    ours = {r["id"] for r in rows}
    intents = [
        i
        for i in await intents_at_standin(mesh.stripe)
        if (i.get("metadata") or {}).get("payment_id") in ours
    ]
    assert sorted(i["metadata"]["payment_id"] for i in intents) == sorted(ours)
    assert {i["id"] for i in intents} == {r["pi"] for r in rows}
    # The ledger balances, with one charge per payment.
    async with mesh.db.acquire() as conn:
        assert await ledger.check(conn) == []
    [charges] = await mesh.db.fetch(
        "SELECT count(*) AS n FROM journal_transactions WHERE kind = 'charge' AND venue_id = $1",
        VENUE,
    )
    assert charges["n"] == len(rows)
    # Requests that were in flight when the process died were answered within the bound.
    caught = [o for o in outcomes if o.first_sent < killed < o.done_at]
    assert caught, "the kill hit no request in flight"
    recovered = max(o.done_at for o in caught) - serving
    assert recovered <= LOCK_S + 3.0, f"recovery took {recovered:.1f}s after the restart"
    print(
        f"purchase burst: {len(outcomes)} orders, kill after "
        f"{sum(0 < o.done_at < killed for o in outcomes)} answers, "
        f"{len(caught)} in flight at the kill, all answered {recovered:.2f}s after the restart "
        f"(bound {LOCK_S + 3.0:.0f}s); attempts max {max(o.attempts for o in outcomes)}"
    )


async def test_kill_during_a_refund_burst_never_refunds_more_than_captured(mesh: Mesh) -> None:
    buyer = "buyer-refunds"
    payments: list[payment_pb2.Payment] = []
    async with mesh.channel() as channel:
        stub = mesh.stub(channel)
        for n in range(3):
            outcome = Outcome(order_id=f"order-refund-{n}-{uuid.uuid4().hex[:6]}", key="")
            outcome.key = str(uuid.uuid4())
            request = create_request(buyer, outcome.order_id, outcome.key)
            reply = await until_answered(
                lambda r=request: stub.CreatePayment(r, metadata=mesh.buyer(buyer), timeout=30),
                outcome,
            )
            assert reply.payment.status == payment_pb2.PAYMENT_STATUS_SUCCEEDED
            payments.append(reply.payment)

    # Eight partial refunds per payment, each 1/6 of its total: only six fit.
    asks = [
        (p, Outcome(order_id=p.order_id, key=str(uuid.uuid4()))) for p in payments for _ in range(8)
    ]
    refused: list[str] = []
    answered: list[Outcome] = []

    async def refunder(batch: list[tuple[payment_pb2.Payment, Outcome]]) -> None:
        async with mesh.channel() as channel:
            stub = mesh.stub(channel)
            for payment, outcome in batch:
                request = payment_pb2.RefundPaymentRequest(
                    idempotency_key=outcome.key,
                    payment_id=payment.id,
                    amount=common_pb2.Money(
                        currency="USD", amount_minor=payment.total.amount_minor // 6
                    ),
                    reason=payment_pb2.REFUND_REASON_REQUESTED_BY_CUSTOMER,
                )
                try:
                    await until_answered(
                        lambda r=request: stub.RefundPayment(
                            r, metadata=mesh.buyer(buyer), timeout=30
                        ),
                        outcome,
                    )
                except grpc.aio.AioRpcError as err:
                    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION, err
                    outcome.done_at = time.monotonic()
                    refused.append(outcome.key)
                answered.append(outcome)

    batches = [asks[i::4] for i in range(4)]
    burst = [asyncio.create_task(refunder(b)) for b in batches]
    killed, serving = await kill_and_restart_when(mesh, lambda: len(answered) >= 6)
    await asyncio.gather(*burst)
    caught = [o for _, o in asks if o.first_sent < killed < o.done_at]
    assert caught, "the kill hit no refund in flight"
    recovered = max(o.done_at for o in caught) - serving
    assert recovered <= LOCK_S + 3.0, f"recovery took {recovered:.1f}s after the restart"

    rows = await mesh.db.fetch(
        "SELECT p.id, p.total, p.refund_succeeded, p.provider_payment_id, "
        "count(r.id) FILTER (WHERE r.status = 'SUCCEEDED') AS refunds, "
        "coalesce(sum(r.amount) FILTER (WHERE r.status = 'SUCCEEDED'), 0) AS refunded "
        "FROM payments p LEFT JOIN refunds r ON r.payment_id = p.id "
        "WHERE p.id = ANY($1::uuid[]) GROUP BY p.id",
        [p.id for p in payments],
    )
    assert len(rows) == 3
    for row in rows:
        assert row["refunded"] == row["refund_succeeded"] <= row["total"]
        assert row["refunds"] == 6  # 6 x total/6 fit, the other 2 were refused
    assert len(refused) == 6
    print(
        f"refund burst: 24 refunds of 3 payments, {len(caught)} in flight at the kill, all "
        f"answered {recovered:.2f}s after the restart, 6 refused (over the captured amount)"
    )
    # One Stripe refund per refund: counted at the stand-in, per PaymentIntent.
    ours = {row["provider_payment_id"]: row["refunds"] for row in rows}
    at_stripe: dict[str, int] = {}
    for refund in await refunds_at_standin(mesh.stripe):
        intent = refund.get("payment_intent")
        if intent in ours:
            at_stripe[intent] = at_stripe.get(intent, 0) + 1
    assert at_stripe == ours
    async with mesh.db.acquire() as conn:
        assert await ledger.check(conn) == []
