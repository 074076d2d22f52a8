"""Wiring of the payment service: what the kit builds at start and serves.

Everything is built here once and passed in (no module-level clients): the Stripe gateway behind
the kit's "stripe" guard, the shared transition code, the flows, the webhook endpoint on the
public HTTP port, the reconciliation job and, in dev/test only, the localstripe webhook
registration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from meshkit.jobs import PeriodicJob
from meshkit.migrations import MigrationSource
from meshkit.resilience import ProviderGuard
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from payment_service.adapters.stripe_gateway import StripeGateway
from payment_service.core import Core
from payment_service.payments import Payments
from payment_service.payouts import Payouts
from payment_service.policy import POLICY
from payment_service.reconciliation import Reconciler
from payment_service.servicer import PaymentServicer
from payment_service.settings import PaymentSettings
from payment_service.webhooks import Webhooks
from tickettoken.payment.v1 import payment_pb2, payment_pb2_grpc

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/stripe"
LOCAL_WEBHOOK_ID = "payment"


def stripe_guard(kit: Kit) -> ProviderGuard:
    """The kit's guard for Stripe: shared Redis rate limit → circuit breaker → retries that
    honour Retry-After and the caller's deadline (policy "stripe", overridable through
    PROVIDER_POLICIES)."""
    return kit.guards["stripe"]


class _Resource:
    """A worker that only closes something at shutdown (the kit stops workers last)."""

    def __init__(self, gateway: StripeGateway) -> None:
        self._gateway = gateway
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        await self._stopping.wait()
        await self._gateway.aclose()

    def stop(self) -> None:
        self._stopping.set()


class _LocalWebhookRegistration:
    """Dev/test: once the HTTP port is bound, point localstripe's webhooks at it."""

    def __init__(self, kit: Kit, gateway: StripeGateway, secret: str, host: str) -> None:
        self._kit = kit
        self._gateway = gateway
        self._secret = secret
        self._host = host

    async def run(self) -> None:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "") else self._host  # noqa: S104
        url = f"http://{host}:{self._kit.http.port}{WEBHOOK_PATH}"
        try:
            await self._gateway.register_local_webhook(
                webhook_id=LOCAL_WEBHOOK_ID, url=url, secret=self._secret
            )
        except Exception:
            logger.exception("could not register the localstripe webhook", extra={"url": url})

    def stop(self) -> None:
        return None


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the servicer graph from the kit's shared resources."""
    settings = kit.settings
    assert isinstance(settings, PaymentSettings)
    gateway = StripeGateway(
        secret_key=settings.stripe_secret_key.get_secret_value(),
        api_base=settings.stripe_api_base,
        guard=stripe_guard(kit),
        api_version=settings.stripe_api_version,
        timeout_s=settings.stripe_timeout_s,
        payment_method_types=settings.stripe_payment_method_types,
    )
    kit.add_worker("stripe-client", _Resource(gateway))
    core = Core(funds_hold_s=settings.funds_hold_s)
    payments = Payments(
        db=kit.db,
        gateway=gateway,
        core=core,
        settings=settings,
        refund_limiter=kit.caller_limiter("refund", settings.refund_rate_limit_per_minute),
        registry=kit.registry,
    )
    payouts = Payouts(db=kit.db, gateway=gateway, settings=settings)
    webhooks = Webhooks(
        db=kit.db,
        gateway=gateway,
        core=core,
        payments=payments,
        payouts=payouts,
        secret=settings.stripe_webhook_secret.get_secret_value(),
        tolerance_s=settings.stripe_webhook_tolerance_s,
        lock_timeout_ms=settings.webhook_lock_timeout_ms,
        registry=kit.registry,
    )
    reconciler = Reconciler(
        db=kit.db,
        gateway=gateway,
        core=core,
        payments=payments,
        redis=kit.redis,
        registry=kit.registry,
        older_than_s=settings.reconcile_older_than_s,
        batch=settings.reconcile_batch,
        outbox_stuck_after_s=settings.outbox_stuck_after_s,
        interval_s=settings.reconcile_interval_s,
    )
    kit.add_http_route("POST", WEBHOOK_PATH, webhooks.http)
    if settings.reconcile_interval_s > 0:
        kit.add_worker(
            "reconciliation",
            PeriodicJob("reconciliation", settings.reconcile_interval_s, reconciler.periodic),
        )
    if settings.stripe_dev_register_webhook and not settings.is_production:
        kit.add_worker(
            "localstripe-webhook",
            _LocalWebhookRegistration(
                kit,
                gateway,
                settings.stripe_webhook_secret.get_secret_value(),
                settings.http_host,
            ),
        )
    return [
        ServiceRegistration(
            descriptor=payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
            add_to_server=payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            servicer=PaymentServicer(
                kit,
                payments=payments,
                payouts=payouts,
                webhooks=webhooks,
                reconciler=reconciler,
                settings=settings,
            ),
            policy=POLICY,
        )
    ]


DEFINITION = ServiceDefinition(
    settings_cls=PaymentSettings,
    migrations=MigrationSource("payment", Path(__file__).parent / "migrations"),
    build=build,
)
