"""Wiring of the payment service: what the kit builds at start and serves.

Everything is built here once and handed in (no module-level clients): the Stripe gateway behind
the kit's "stripe" guard (closed at shutdown), the settlement step the use cases share, the use
cases, the servicer with its error map, the webhook route on the public HTTP port, the
reconciliation job, the event relay (PaymentSucceeded → nft MintTickets, refunds → RevokeTicket
and a message, failures → a message: jobs/relay.py) and, in dev/test only, the localstripe
webhook registration.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshkit.routing import EventRouter, add_event_relay
from meshkit.server import Kit, ServiceDefinition, ServiceRegistration
from payment_service.adapters.stripe_gateway import StripeGateway
from payment_service.api.errors import to_mesh_error
from payment_service.api.servicer import PaymentServicer
from payment_service.domain.fees import Pricing
from payment_service.http import stripe_webhook
from payment_service.jobs import localstripe, reconciliation
from payment_service.jobs.relay import PaymentRelay
from payment_service.policy import POLICY
from payment_service.settings import PaymentSettings
from payment_service.usecases.cancel import Cancellations
from payment_service.usecases.fees import Fees
from payment_service.usecases.payments import PaymentRules, Payments
from payment_service.usecases.payouts import PayoutRules, Payouts
from payment_service.usecases.reconciliation import Reconciliation, ReconciliationRules
from payment_service.usecases.refunds import Refunds
from payment_service.usecases.settlement import Settlement
from payment_service.usecases.tiers import VenueTiers
from payment_service.usecases.webhooks import Webhooks
from tickettoken.payment.v1 import payment_pb2_grpc


async def build(kit: Kit) -> Sequence[ServiceRegistration]:
    """Build the service from the kit's shared resources."""
    settings = kit.settings
    assert isinstance(settings, PaymentSettings)
    gateway = StripeGateway(
        secret_key=settings.stripe_secret_key.get_secret_value(),
        api_base=settings.stripe_api_base,
        guard=kit.guards["stripe"],
        api_version=settings.stripe_api_version,
        timeout_s=settings.stripe_timeout_s,
        payment_method_types=settings.stripe_payment_method_types,
    )
    kit.on_stop(gateway.aclose)
    pricing = Pricing(
        gas_fee_per_ticket=settings.gas_fee_per_ticket_minor,
        entertainment_tax_bps=settings.entertainment_tax_bps,
    )
    tiers = VenueTiers(ttl_s=settings.venue_tier_cache_s)
    settlement = Settlement(
        db=kit.db,
        gateway=gateway,
        events=kit.events,
        funds_hold_s=settings.funds_hold_s,
        registry=kit.registry,
    )
    webhooks = Webhooks(
        db=kit.db,
        settlement=settlement,
        secret=settings.stripe_webhook_secret.get_secret_value(),
        tolerance_s=settings.stripe_webhook_tolerance_s,
        lock_timeout_ms=settings.webhook_lock_timeout_ms,
        registry=kit.registry,
    )
    reconciler = Reconciliation(
        db=kit.db,
        gateway=gateway,
        settlement=settlement,
        rules=ReconciliationRules(
            older_than_s=settings.reconcile_older_than_s,
            batch=settings.reconcile_batch,
            outbox_stuck_after_s=settings.outbox_stuck_after_s,
        ),
        registry=kit.registry,
    )
    servicer = PaymentServicer(
        fees=Fees(
            db=kit.db,
            pricing=pricing,
            tiers=tiers,
            supported_currencies=settings.supported_currencies,
        ),
        payments=Payments(
            db=kit.db,
            gateway=gateway,
            settlement=settlement,
            pricing=pricing,
            tiers=tiers,
            rules=PaymentRules(
                supported_currencies=settings.supported_currencies,
                max_tickets_per_order=settings.max_tickets_per_order,
                max_payment_minor=settings.max_payment_minor,
            ),
        ),
        refunds=Refunds(
            db=kit.db,
            settlement=settlement,
            limiter=kit.caller_limiter("refund", settings.refund_rate_limit_per_minute),
        ),
        cancellations=Cancellations(db=kit.db, gateway=gateway, settlement=settlement),
        webhooks=webhooks,
        payouts=Payouts(
            db=kit.db,
            gateway=gateway,
            settlement=settlement,
            rules=PayoutRules(
                supported_currencies=settings.supported_currencies,
                chargeback_reserve_bps=settings.chargeback_reserve_bps,
                payout_min_minor=settings.payout_min_minor,
                payout_daily_limit_minor=settings.payout_daily_limit_minor,
                instant_payout_fee_bps=settings.instant_payout_fee_bps,
            ),
        ),
        reconciliation=reconciler,
    )
    kit.add_http_route("POST", stripe_webhook.PATH, stripe_webhook.route(webhooks))
    reconciliation.schedule(kit, reconciler, settings.reconcile_interval_s)
    relay = PaymentRelay(
        kit.clients,
        timeout_s=settings.relay_call_timeout_s,
        # Only with a configured integration target (make run and k8s set it).
        to_integration="integration_grpc_target" in settings.model_fields_set,
    )
    add_event_relay(
        kit, EventRouter(relay.routes(), registry=kit.registry, relay="payment"), settings
    )
    if settings.stripe_dev_register_webhook and not settings.is_production:
        localstripe.register_on_start(
            kit, gateway, settings.stripe_webhook_secret.get_secret_value()
        )
    return [
        ServiceRegistration.of(
            payment_pb2_grpc,
            "PaymentService",
            servicer,
            policy=POLICY,
            errors=to_mesh_error,
        )
    ]


DEFINITION = ServiceDefinition.of(PaymentSettings, build, __file__)
