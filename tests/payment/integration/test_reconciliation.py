"""Reconciliation: stuck payments brought to Stripe's state, stuck outbox events requeued."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
import pytest

from meshdev.standins.faultproxy import FaultProxy
from meshdev.testing.servers import TestTokens, channel_for
from meshkit.server import App
from tests.payment.integration.support import (
    SUCCEEDED,
    THREE_D_SECURE,
    PaymentClient,
    StartQuiet,
    add_venue,
)
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

P = payment_pb2
A = P.ReconciliationAction

Start = Callable[..., Awaitable[App]]


async def started(
    start_payment: Start, tokens: TestTokens, localstripe: str, **settings: object
) -> tuple[PaymentClient, grpc.aio.Channel]:
    app = await start_payment(register=False, **settings)
    await add_venue(app, "venue-nash")
    channel = channel_for(app)
    return PaymentClient(
        app, payment_pb2_grpc.PaymentServiceStub(channel), tokens, localstripe
    ), channel


async def authenticated_without_webhook(client: PaymentClient) -> P.Payment:
    payment = await client.create(pm=await client.payment_method(THREE_D_SECURE))
    assert payment.status == P.PAYMENT_STATUS_REQUIRES_ACTION
    await client.authenticate(payment.provider_payment_id, payment.client_secret)
    return payment


async def test_repairs_a_payment_whose_webhook_never_arrived(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> None:
    client, channel = await started(start_payment, tokens, localstripe)
    async with channel:
        payment = await authenticated_without_webhook(client)
        request = P.ReconcilePaymentsRequest(
            idempotency_key=str(uuid.uuid4()), payment_ids=[payment.id], dry_run=True
        )
        dry = await client.stub.ReconcilePayments(request, metadata=client.admin())
        assert dry.dry_run and dry.payments_checked == 1 and dry.payments_updated == 0
        [found] = dry.discrepancies
        assert (found.action, found.applied) == (A.RECONCILIATION_ACTION_STATUS_UPDATED, False)
        assert (found.from_status, found.to_status) == (
            P.PAYMENT_STATUS_REQUIRES_ACTION,
            P.PAYMENT_STATUS_SUCCEEDED,
        )
        assert (await client.get(payment.id)).status == P.PAYMENT_STATUS_REQUIRES_ACTION

        request = P.ReconcilePaymentsRequest(
            idempotency_key=str(uuid.uuid4()), payment_ids=[payment.id]
        )
        report = await client.stub.ReconcilePayments(request, metadata=client.admin())
        assert report.payments_updated == 1
        [found] = report.discrepancies
        assert (found.action, found.applied, found.provider_status) == (
            A.RECONCILIATION_ACTION_STATUS_UPDATED,
            True,
            "succeeded",
        )
        assert (await client.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED
        assert await client.fetchval("SELECT count(*) FROM journal_transactions") == 1
        assert [e.event_type for e in await client.events()] == [SUCCEEDED]
        cause = await client.fetchval(
            "SELECT cause_kind FROM payment_transitions WHERE to_status = 'SUCCEEDED'"
        )
        assert cause == "reconciliation"
        # Nothing left to do on a second run; only admins may run it.
        again = await client.stub.ReconcilePayments(
            P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4()), payment_ids=[payment.id]),
            metadata=client.admin(),
        )
        assert again.payments_checked == 0 and not again.discrepancies
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.ReconcilePayments(
                P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4())),
                metadata=client.buyer(),
            )
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{client.app.ops_port}/metrics") as response,
        ):
            metrics = await response.text()
        assert (
            'payment_reconciliation_discrepancies_total{action="RECONCILIATION_ACTION_STATUS_UPDATED",'
            'applied="true"} 1.0' in metrics
        )


async def test_periodic_job_repairs_without_anyone_asking(
    start_payment: Start, tokens: TestTokens, localstripe: str, redis_url: str
) -> None:
    client, channel = await started(
        start_payment,
        tokens,
        localstripe,
        reconcile_interval_s=0.2,
        reconcile_older_than_s=0.3,
    )
    async with channel:
        payment = await authenticated_without_webhook(client)
        for _ in range(100):
            if (await client.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED:
                break
            await asyncio.sleep(0.1)
        assert (await client.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED


async def test_payment_that_never_reached_stripe_is_failed(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> None:
    from meshdev.embedded import free_port

    # Stripe unreachable: the create fails retryably and the payment stays PENDING.
    client, channel = await started(
        start_payment,
        tokens,
        localstripe,
        stripe_api_base=f"http://127.0.0.1:{free_port()}",
        reconcile_older_than_s=0,
    )
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.create()
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        [row] = await client.fetch("SELECT id, status, provider_payment_id FROM payments")
        assert (row["status"], row["provider_payment_id"]) == ("PENDING", None)
        report = await client.stub.ReconcilePayments(
            P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4())),
            metadata=client.admin(),
        )
        [found] = report.discrepancies
        assert (found.action, found.applied) == (A.RECONCILIATION_ACTION_MARKED_FAILED, True)
        payment = await client.get(str(row["id"]))
        assert payment.status == P.PAYMENT_STATUS_FAILED
        assert payment.failure_code == "provider_payment_missing"


async def test_stuck_outbox_events_are_requeued(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> None:
    client, channel = await started(start_payment, tokens, localstripe)
    async with channel:
        await client.create()
        await client.fetch(
            "UPDATE outbox SET attempts = 3, last_error = 'consumer down', "
            "available_at = now() + interval '1 hour', created_at = now() - interval '2 hours'"
        )
        report = await client.stub.ReconcilePayments(
            P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4()), older_than_seconds=60),
            metadata=client.admin(),
        )
        assert report.outbox_events_requeued == 1
        assert [d.action for d in report.discrepancies] == [A.RECONCILIATION_ACTION_OUTBOX_REQUEUED]
        assert await client.fetchval("SELECT available_at <= now() FROM outbox") is True


async def test_refund_that_never_reached_stripe_is_completed(
    start_payment: Start, tokens: TestTokens, localstripe: str
) -> None:
    from meshdev.embedded import free_port

    client, channel = await started(start_payment, tokens, localstripe, reconcile_older_than_s=0)
    async with channel:
        payment = await client.create()
        assert client.app.kit is not None
        # A second replica on the same schema whose Stripe is unreachable takes the refund:
        # the amount is held, the call fails retryably, the refund waits without a Stripe id.
        down = await start_payment(
            register=False,
            db_schema=client.app.kit.db.schema,
            stripe_api_base=f"http://127.0.0.1:{free_port()}",
        )
        async with channel_for(down) as down_channel:
            down_client = PaymentClient(
                down, payment_pb2_grpc.PaymentServiceStub(down_channel), tokens, localstripe
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await down_client.refund(payment.id, 2_000)
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        [refund] = await client.fetch("SELECT status, provider_refund_id FROM refunds")
        assert (refund["status"], refund["provider_refund_id"]) == ("PENDING", None)
        held = await client.get(payment.id)
        assert held.refunded.amount_minor == 2_000  # held: a concurrent refund cannot take it
        assert held.status == P.PAYMENT_STATUS_SUCCEEDED

        report = await client.stub.ReconcilePayments(
            P.ReconcilePaymentsRequest(idempotency_key=str(uuid.uuid4())),
            metadata=client.admin(),
        )
        [found] = report.discrepancies
        assert (found.action, found.applied, found.to_status) == (
            A.RECONCILIATION_ACTION_STATUS_UPDATED,
            True,
            P.PAYMENT_STATUS_PARTIALLY_REFUNDED,
        )
        current = await client.get(payment.id)
        assert current.refunds[0].status == P.REFUND_STATUS_SUCCEEDED
        assert current.refunds[0].provider_refund_id.startswith("re_")
        assert (
            await client.fetchval("SELECT count(*) FROM journal_transactions WHERE kind = 'refund'")
            == 1
        )


async def test_the_periodic_run_holds_a_lease_one_replica_at_a_time(
    start_quiet: StartQuiet, stripe_proxy: FaultProxy
) -> None:
    """Two replicas on one schema, both scheduling reconciliation every 0.1 s: while one run
    waits on Stripe, the other replica skips every turn (only one run ever asks Stripe), and
    once the run ends its lease is released at once, not left to expire."""
    # Payments are picked up once unchanged for 0.5 s: not while their create is under way.
    settings = {"reconcile_interval_s": 0.1, "reconcile_older_than_s": 0.5}
    first = await start_quiet(**settings)
    assert first.app.kit is not None
    second = await start_quiet(db_schema=first.app.kit.db.schema, **settings)
    replicas = (first, second)

    async def runs(outcome: str) -> float:
        sample = f'job_runs_total{{job="reconciliation",outcome="{outcome}"}}'
        return sum([await r.metric(sample) or 0.0 for r in replicas])

    held = stripe_proxy.hold("GET", "/v1/payment_intents/")
    payment = await first.create(pm=await first.payment_method(THREE_D_SECURE))
    await held.wait_arrived()  # a run holds the lease and waits on Stripe
    await first.authenticate(payment.provider_payment_id, payment.client_secret)
    skipped_before = await runs("skipped")
    await asyncio.sleep(1.0)  # ~10 turns of each replica
    assert held.matched == 1  # no second run asked Stripe meanwhile
    assert await runs("skipped") >= skipped_before + 5
    done_before = await runs("ok")

    held.release()
    for _ in range(100):
        if (await first.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    assert (await first.get(payment.id)).status == P.PAYMENT_STATUS_SUCCEEDED
    # Released, not expired (the lease lasts 60 s): the next runs follow within a few turns.
    for _ in range(40):
        if await runs("ok") >= done_before + 3:
            break
        await asyncio.sleep(0.05)
    assert await runs("ok") >= done_before + 3
    assert await first.fetchval("SELECT count(*) FROM journal_transactions") == 1
